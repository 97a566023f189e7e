package store

// Dump is a whole store as plain records, for copying it into another
// implementation (`tender store migrate`): fleet/store/boltdb's Export
// fills one, fleet/store/etcdstore's Import writes it. Revisions (Rev)
// are not carried: the target stamps its own.
type Dump struct {
	Devices []Device // records, without Status
	// Status holds the devices' statuses by id (those that have one).
	Status map[string]DeviceStatus
	// Generations is every device's high-water mark, also of devices
	// deleted since (they are kept so no generation is reissued).
	Generations map[string]uint64
	Apps        []App
	// AppLatest is the highest revision ever stored per app name, also
	// of apps deleted since (revision numbers are never reused).
	AppLatest  map[string]uint64
	Revisions  map[string][]AppRevision // by app name, oldest first
	Rollouts   []Blob
	Docs       []Blob
	JoinTokens []JoinToken
	APITokens  []APIToken
	// Feed is every stored event in cursor order; FeedSeq is the last
	// cursor ever issued (the next one is above it).
	Feed    []FeedEvent
	FeedSeq uint64
	// Audit is the whole log; AuditCount the entries ever written (more
	// than len(Audit) only in a damaged log, which Verify reports).
	Audit      []AuditEntry
	AuditCount uint64
}

// Counts are the number of records of each kind in a Dump, for checking a
// copy.
func (d *Dump) Counts() map[string]int {
	revs := 0
	for _, r := range d.Revisions {
		revs += len(r)
	}
	return map[string]int{
		"devices": len(d.Devices), "statuses": len(d.Status), "generations": len(d.Generations),
		"apps": len(d.Apps), "app latest": len(d.AppLatest), "app revisions": revs,
		"rollouts": len(d.Rollouts), "documents": len(d.Docs), "join tokens": len(d.JoinTokens),
		"api tokens": len(d.APITokens), "events": len(d.Feed), "audit entries": len(d.Audit),
	}
}
