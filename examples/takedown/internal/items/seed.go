package items

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/syncbridge/syncbridge/examples/takedown/internal/contract"
	"github.com/syncbridge/syncbridge/examples/takedown/internal/db"
)

// MaxSeed bounds Seed's n.
const MaxSeed = 10_000_000

// showcase is the sample catalogue: a few items, some of them dubious,
// shared with groups, with their owner's followers, or both.
var showcase = []contract.Item{
	{ID: "itm-1001", Owner: "alice", Title: "Vintage road bike, 56 cm frame", Audience: contract.Audience{Groups: []string{"cycling-lyon"}, Followers: true}},
	{ID: "itm-1002", Owner: "quickdeals_77", Title: "iPhone 16 Pro, sealed, half price, cash only", Audience: contract.Audience{Groups: []string{"bargains-paris", "phones"}}},
	{ID: "itm-1003", Owner: "petlover2024", Title: "Puppies for sale, no papers, ready now", Audience: contract.Audience{Followers: true}},
	{ID: "itm-1004", Owner: "bob", Title: "Two concert tickets at face value", Audience: contract.Audience{Groups: []string{"music-fans"}, Followers: true}},
	{ID: "itm-1005", Owner: "luxe_outlet", Title: "Designer handbag, 90% off, no receipt", Audience: contract.Audience{Groups: []string{"fashion-swap"}, Followers: true}},
}

// SeedItem returns the i-th item of the seeded catalogue (from 0): the
// five sample items itm-1001 to itm-1005, then generated ones, itm-1006
// and on, for load tests.
func SeedItem(i int) contract.Item {
	if i < len(showcase) {
		it := showcase[i]
		it.Audience.Groups = append([]string(nil), it.Audience.Groups...)
		return it
	}
	n := 1001 + i
	return contract.Item{
		ID:       fmt.Sprintf("itm-%d", n),
		Owner:    fmt.Sprintf("user%d", n%997),
		Title:    fmt.Sprintf("Generated item %d", n),
		Audience: contract.Audience{Groups: []string{fmt.Sprintf("group-%d", n%31)}, Followers: n%2 == 0},
	}
}

// Seed inserts the first n items of the seeded catalogue (see SeedItem)
// that d lacks, and returns how many it inserted. It never changes an item
// that exists: a restart keeps every takedown.
func Seed(ctx context.Context, d *db.DB, n int) (int, error) {
	if n < 0 || n > MaxSeed {
		return 0, fmt.Errorf("items: seed %d items: want 0 to %d", n, MaxSeed)
	}
	const batch = 500
	inserted := 0
	for start := 0; start < n; start += batch {
		end := min(start+batch, n)
		err := d.Tx(ctx, func(tx *sql.Tx) error {
			var q strings.Builder
			q.WriteString(`INSERT INTO items (id, owner, title, audience) VALUES `)
			args := make([]any, 0, 4*(end-start))
			for i := start; i < end; i++ {
				it := SeedItem(i)
				aud, err := json.Marshal(it.Audience)
				if err != nil {
					return err
				}
				if i > start {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?)")
				args = append(args, it.ID, it.Owner, it.Title, string(aud))
			}
			q.WriteString(` ON CONFLICT (id) DO NOTHING`)
			r, err := tx.ExecContext(ctx, d.Q(q.String()), args...)
			if err != nil {
				return err
			}
			m, err := r.RowsAffected()
			inserted += int(m)
			return err
		})
		if err != nil {
			return inserted, fmt.Errorf("items: seed: %w", err)
		}
	}
	return inserted, nil
}

func unmarshalAudience(s string, a *contract.Audience) error {
	return json.Unmarshal([]byte(s), a)
}
