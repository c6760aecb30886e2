// Package messagevault is the domain of MessageVault, a durable append-only
// message log kept in page blobs (Azure Blob Storage in production, a local
// directory by default).
//
// This package owns what every other package shares: the [Message] type, the
// stream-name rules, the sentinel errors, and the small storage interfaces
// the log consumes ([Storage], [PageWriter], [PageReader]). Backends live in
// packages named after what they wrap (file, mem, and later azure); the byte
// formats live in package formats; the log itself (writer and reader) lives
// in package stream.
package messagevault
