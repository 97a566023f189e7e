// Package image is the device's content-addressed image store: it loads
// OCI image archives (and docker save's legacy archives, whose
// manifest.json it turns into the index and manifests of an OCI layout),
// verifies every blob, unpacks each distinct layer once
// into a directory usable as an overlayfs lowerdir, and records images in
// bbolt.
//
// # On-disk layout
//
// Under the store root (for example /var/lib/tender/images, mode 0700):
//
//	meta.db                 bbolt metadata (below)
//	blobs/sha256/<hex>      verified blobs: image manifests and configs,
//	                        and compressed layers of pulled images (and of
//	                        loaded ones with Options.KeepLayerBlobs), which
//	                        Save exports; this roughly adds the compressed
//	                        image size to the unpacked size on disk
//	layers/<short-id>/      one unpacked layer per distinct diff_id, shared by
//	                        images; <short-id> is the first 12 hex digits of
//	                        the diff_id (longer only on a prefix collision),
//	                        kept short because overlay's lowerdir option is
//	                        limited to one page
//	layers/tmp-*/           a layer being unpacked (never committed)
//	tmp/load-*/             a Load's staging area for the archive's blobs
//	tmp/pull-*/             a Pull's staging area for manifests and configs
//	tmp/partial/<hex>       a layer blob being downloaded by Pull, named by
//	                        its digest, flocked while written; kept by Open
//	                        so a killed or failed pull resumes (HTTP Range)
//
// Layer directories hold whiteouts in overlayfs form: an OCI ".wh.name"
// becomes a 0:0 character device "name", and ".wh..wh..opq" becomes the
// xattr trusted.overlay.opaque=y on its directory. Device nodes from a tar
// are never created: they are counted and logged once per layer, at debug
// level (a distribution image has a few in /dev).
//
// # bbolt schema
//
// All buckets live under the version bucket "v1"; values are JSON.
//
//	v1/images  manifest digest -> imageRecord {digest, mediaType, id (config
//	           digest), config (parsed), layers (diff_ids, bottom first),
//	           layerBlobs, names, created}
//	v1/names   full image name -> manifest digest
//	v1/layers  diff_id -> layerRecord {diffID, dir, size, blob, mediaType,
//	           committed}; a record exists only for committed layers
//	v1/blobs   digest -> blobRecord {mediaType, size} for files under blobs/
//
// # Pulling from registries
//
// Pull (pull.go, registry.go) resolves a reference on the registry's
// mirrors then the registry itself (HTTPS, custom CA per registry; plain
// HTTP only for hosts marked insecure), picks the platform's manifest,
// downloads the layers the store lacks to tmp/partial (resuming, with
// bounded retries; concurrent pulls of one blob share one download) and
// hands everything to the same ingest path as Load: verify, unpack, commit.
//
// # Durability and recovery
//
// Load stages and verifies blobs under tmp/, unpacks new layers into
// layers/tmp-*, calls syncfs on the store's file system, renames layers
// and blobs into place, fsyncs the parent directories and only then
// records them in one bbolt transaction. Open deletes every layer
// directory and blob file that bbolt does not record, and empties tmp/, so
// a crash at any point leaves either the old or the new state. Remove
// deletes records first and files after, with the same recovery.
package image
