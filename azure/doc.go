// Package azure is the production backend: streams in Azure Blob Storage
// page blobs, in the v1 layout. It is the only package
// that imports the Azure SDK.
//
//	container mv-<stream>
//	  000000000000.b7   page blob: the records, resized in large steps
//	  position.c7       page blob of size 0; metadata "position" = committed length
//	container mv-sys
//	  auth.json         block blob: the users file (see UsersSource)
//
// Fencing: a writer takes a stream over when it opens, by rewriting the
// metadata of both blobs under If-Match, which changes their ETags. Every
// later page write, resize and position commit is conditional on the ETag
// this writer last saw, so a writer that another has taken over from fails
// its next operation with messagevault.ErrFenced and nothing it sends is
// applied.
//
// Access: with the account key of a connection string, or with Microsoft
// Entra ID tokens when the account is given by URL (see Open); read grants
// are then service SAS tied to a stored access policy, or user delegation
// SAS.
//
// Durability: Azure acknowledges a Put Page or a metadata write only once
// it is durable (and replicated), so Flush has nothing to do. Pages are sent
// in Put Page requests of at most 4 MiB.
//
// Transient faults (timeouts, 408, 429, 500, 502, 503, 504, connection
// resets) are retried by the SDK's retry policy with exponential backoff;
// what still fails is returned. A retried conditional write whose first try
// landed fails its condition: the writer then reports ErrFenced, and a
// fresh writer (which reads what storage holds) takes over.
package azure
