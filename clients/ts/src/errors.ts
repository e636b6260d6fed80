/**
 * Nexus API error codes, carried by Connect, gRPC and gRPC-Web errors as the `reason` of a
 * `google.rpc.ErrorInfo` error detail (domain "nexus.dev").
 *
 * @module
 */

import { ConnectError } from "@connectrpc/connect";
import { create, createFileRegistry, type DescMessage, type Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

/** The `domain` of the ErrorInfo details that the Nexus server attaches to its errors. */
export const NEXUS_ERROR_DOMAIN = "nexus.dev";

/**
 * The error codes of the Nexus API (ARCHITECTURE.md §3). A server may add codes later, which is
 * why {@link errorCode} returns a plain `string`; compare against these constants.
 */
export const ErrorCode = {
  PLUGIN_NOT_FOUND: "PLUGIN_NOT_FOUND",
  PLUGIN_ALREADY_INSTALLED: "PLUGIN_ALREADY_INSTALLED",
  PLUGIN_DEPENDENCY_ERROR: "PLUGIN_DEPENDENCY_ERROR",
  PLUGIN_PERMISSION_DENIED: "PLUGIN_PERMISSION_DENIED",
  PLUGIN_INSTALLATION_FAILED: "PLUGIN_INSTALLATION_FAILED",
  PLUGIN_STARTUP_FAILED: "PLUGIN_STARTUP_FAILED",
  PLUGIN_INCOMPATIBLE: "PLUGIN_INCOMPATIBLE",
  PLUGIN_CONFIGURATION_ERROR: "PLUGIN_CONFIGURATION_ERROR",
  PLUGIN_COMMUNICATION_TIMEOUT: "PLUGIN_COMMUNICATION_TIMEOUT",
  PLUGIN_UNAVAILABLE: "PLUGIN_UNAVAILABLE",
  VALIDATION_ERROR: "VALIDATION_ERROR",
  UNAUTHENTICATED: "UNAUTHENTICATED",
  PLUGIN_ROUTE_CONFLICT: "PLUGIN_ROUTE_CONFLICT",
  UNIMPLEMENTED: "UNIMPLEMENTED",
  INTERNAL_ERROR: "INTERNAL_ERROR",
  NOT_FOUND: "NOT_FOUND",
  METHOD_NOT_ALLOWED: "METHOD_NOT_ALLOWED",
  REQUEST_TOO_LARGE: "REQUEST_TOO_LARGE",
} as const;

/** One of the known Nexus API error codes. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * `google.rpc.ErrorInfo` (google/rpc/error_details.proto): why an error happened.
 * Nexus puts its API error code in `reason`.
 */
export type ErrorInfo = Message<"google.rpc.ErrorInfo"> & {
  /** The API error code, e.g. "PLUGIN_NOT_FOUND". */
  reason: string;
  /** The error's domain; "nexus.dev" for Nexus errors. */
  domain: string;
  /** Additional structured details about the error. */
  metadata: { [key: string]: string };
};

// No generated TypeScript for google/rpc/error_details.proto exists in gen/ts, so the descriptor
// of ErrorInfo (the only message needed) is declared here, wire-compatible with the original:
//   message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
const errorDetailsFile = create(FileDescriptorProtoSchema, {
  name: "google/rpc/error_details.proto",
  package: "google.rpc",
  syntax: "proto3",
  messageType: [
    {
      name: "ErrorInfo",
      field: [
        stringField("reason", 1),
        stringField("domain", 2),
        {
          name: "metadata",
          jsonName: "metadata",
          number: 3,
          label: FieldDescriptorProto_Label.REPEATED,
          type: FieldDescriptorProto_Type.MESSAGE,
          typeName: ".google.rpc.ErrorInfo.MetadataEntry",
        },
      ],
      nestedType: [
        {
          name: "MetadataEntry",
          field: [stringField("key", 1), stringField("value", 2)],
          options: { mapEntry: true },
        },
      ],
    },
  ],
});

function stringField(name: string, number: number) {
  return {
    name,
    jsonName: name,
    number,
    label: FieldDescriptorProto_Label.OPTIONAL,
    type: FieldDescriptorProto_Type.STRING,
  };
}

/** Message schema of `google.rpc.ErrorInfo`, usable with `create`, `toBinary`, `findDetails` etc. */
export const ErrorInfoSchema: GenMessage<ErrorInfo> = mustGetMessage(
  createFileRegistry(errorDetailsFile, () => undefined).getMessage("google.rpc.ErrorInfo"),
) as GenMessage<ErrorInfo>;

function mustGetMessage(desc: DescMessage | undefined): DescMessage {
  if (desc === undefined) {
    throw new Error("internal: google.rpc.ErrorInfo descriptor did not build");
  }
  return desc;
}

/**
 * Returns the `google.rpc.ErrorInfo` detail of a Nexus error, or undefined when `err` is not a
 * {@link ConnectError} or carries no ErrorInfo. A detail in the Nexus domain ("nexus.dev") wins
 * over others.
 */
export function errorInfo(err: unknown): ErrorInfo | undefined {
  if (!(err instanceof ConnectError)) {
    return undefined;
  }
  const infos = err.findDetails(ErrorInfoSchema);
  return infos.find((i) => i.domain === NEXUS_ERROR_DOMAIN) ?? infos[0];
}

/**
 * Returns the Nexus API error code (e.g. "PLUGIN_NOT_FOUND", "UNAUTHENTICATED") of an error
 * thrown by a Nexus client call: the `reason` of its `google.rpc.ErrorInfo` detail. Returns
 * undefined for anything else (not a ConnectError, or no such detail, e.g. a network failure).
 *
 * ```ts
 * try {
 *   await client.plugins.getPlugin({ pluginId: "auth-plugin" });
 * } catch (err) {
 *   if (errorCode(err) === ErrorCode.PLUGIN_NOT_FOUND) { ... }
 * }
 * ```
 */
export function errorCode(err: unknown): string | undefined {
  const reason = errorInfo(err)?.reason;
  return reason === undefined || reason === "" ? undefined : reason;
}
