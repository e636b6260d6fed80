package install

import (
	"time"
)

// InstallRequest asks for a plugin to be installed.
type InstallRequest struct {
	// Source is "file", "repository" or "url".
	Source string
	// FilePath is a package on the server (source file).
	FilePath string
	// PackageData is an uploaded package (source file).
	PackageData []byte
	// PluginName and Version select a repository package (source repository).
	PluginName, Version string
	// DownloadURL and SHA256 locate a package (source url).
	DownloadURL, SHA256 string
	Config              map[string]any
	AutoEnable          bool
	ForceReinstall      bool
}

// InstallResult reports an install.
type InstallResult struct {
	PluginID    string
	Name        string
	Version     string
	Status      string
	Enabled     bool
	InstalledAt time.Time
	Duration    time.Duration
}

// UninstallOptions says how to uninstall.
type UninstallOptions struct {
	Force, Backup, CleanupData bool
}

// UninstallResult reports an uninstall.
type UninstallResult struct {
	PluginID      string
	BackupCreated bool
	BackupID      string
	DataRemoved   bool
	UninstalledAt time.Time
}
