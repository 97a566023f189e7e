package boltdb

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/tender-edge/tender/fleet/store"
)

// Export reads the whole store, in one read transaction, as a store.Dump
// (for `tender store migrate`). Writes go on meanwhile; the dump is of
// the moment Export started.
func (db *DB) Export(ctx context.Context) (*store.Dump, error) {
	d := &store.Dump{Status: map[string]store.DeviceStatus{}, Generations: map[string]uint64{},
		AppLatest: map[string]uint64{}, Revisions: map[string][]store.AppRevision{}}
	err := db.view(ctx, func(t *tx) error {
		each := func(bucket []byte, kind string, fn func(k, v []byte) error) error {
			return t.b(bucket).ForEach(func(k, v []byte) error {
				if err := fn(k, v); err != nil {
					return decodeErr(kind, string(k), err)
				}
				return nil
			})
		}
		err := each(bucketDevices, "device", func(_, v []byte) error {
			var x store.Device
			err := json.Unmarshal(v, &x)
			x.Rev = 0
			d.Devices = append(d.Devices, x)
			return err
		})
		if err == nil {
			err = each(bucketStatus, "device status", func(k, v []byte) error {
				var x store.DeviceStatus
				err := json.Unmarshal(v, &x)
				d.Status[string(k)] = x
				return err
			})
		}
		if err == nil {
			err = each(bucketGenerations, "generation", func(k, v []byte) error { d.Generations[string(k)] = getU64(v); return nil })
		}
		if err == nil {
			err = each(bucketApps, "app", func(_, v []byte) error {
				var x store.App
				err := json.Unmarshal(v, &x)
				x.Rev = 0
				d.Apps = append(d.Apps, x)
				return err
			})
		}
		if err == nil {
			err = each(bucketAppLatest, "app latest", func(k, v []byte) error { d.AppLatest[string(k)] = getU64(v); return nil })
		}
		if err == nil {
			err = each(bucketRevisions, "app revision", func(k, v []byte) error {
				name, _, _ := bytes.Cut(k, []byte{0})
				var x store.AppRevision
				err := json.Unmarshal(v, &x)
				d.Revisions[string(name)] = append(d.Revisions[string(name)], x)
				return err
			})
		}
		for _, bl := range []struct {
			bucket []byte
			out    *[]store.Blob
		}{{bucketRollouts, &d.Rollouts}, {bucketDocs, &d.Docs}} {
			if err == nil {
				err = each(bl.bucket, "document", func(k, _ []byte) error {
					b, _ := t.blob(bl.bucket, string(k))
					b.Rev = 0
					*bl.out = append(*bl.out, b)
					return nil
				})
			}
		}
		if err == nil {
			err = each(bucketJoinTokens, "join token", func(_, v []byte) error {
				var x store.JoinToken
				err := json.Unmarshal(v, &x)
				x.Rev = 0
				d.JoinTokens = append(d.JoinTokens, x)
				return err
			})
		}
		if err == nil {
			err = each(bucketAPITokens, "api token", func(_, v []byte) error {
				var x store.APIToken
				err := json.Unmarshal(v, &x)
				x.Rev = 0
				d.APITokens = append(d.APITokens, x)
				return err
			})
		}
		if err == nil {
			err = each(bucketFeed, "event", func(_, v []byte) error {
				var x store.FeedEvent
				err := json.Unmarshal(v, &x)
				d.Feed = append(d.Feed, x)
				return err
			})
		}
		if err == nil {
			err = each(bucketAudit, "audit entry", func(_, v []byte) error {
				var x store.AuditEntry
				err := json.Unmarshal(v, &x)
				d.Audit = append(d.Audit, x)
				return err
			})
		}
		d.FeedSeq = t.b(bucketFeed).Sequence()
		d.AuditCount = t.b(bucketAudit).Sequence()
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}
