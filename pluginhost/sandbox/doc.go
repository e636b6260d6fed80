// Package sandbox confines a host-launched plugin with the operating system's own
// mechanisms, applied in the plugin's process before its first instruction:
//
//   - identity: its own unprivileged uid and gid (or, when the host is not root, a user
//     namespace);
//   - no_new_privs: no setuid binary or file capability can raise its privileges again;
//   - filesystem: Landlock, allowing read and execute in its package directory and the
//     system's library and certificate paths, read and write in its own data directory,
//     nothing else;
//   - network: without the http:external permission, a network namespace holding only a
//     loopback interface (the host is reached over a Unix socket);
//   - syscalls: a seccomp filter denying what no plugin needs (ptrace, mount, bpf, kexec,
//     keyctl, module loading, namespace creation, ...);
//   - ipc: Landlock scoping, so that it can neither signal processes outside its sandbox nor
//     connect to their abstract Unix sockets.
//
// The parent cannot run code in a child between fork and exec, so the host starts its own
// executable (/proc/self/exe) with [InitArg0] as argv[0]. That process, the init stage,
// reads an [Exec] from file descriptor 3, applies it on one locked OS thread, and executes
// the plugin from that thread, so the plugin inherits exactly that thread's credentials,
// Landlock domain and seccomp filter. If anything fails it writes the reason to file
// descriptor 4 and exits; a successful exec closes descriptor 4 (close-on-exec) with
// nothing written. Every binary that links this package (the server, its tests) acts as
// the init stage when started that way: the switch happens in this package's init
// function, before main.
//
// Which mechanisms a plugin gets is its profile ([Want]), chosen by its security level,
// and what this host can do is [Probe]'s answer; [Resolve] combines both into the report
// the API shows, where every mechanism is enforced, unavailable here (and why) or off.
package sandbox
