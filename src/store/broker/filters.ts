// Subscription filters as a publish matches them, parsed once per subscription rather than once per
// publish (review of stop 62: every publish read and parsed the JSON filter of every subscription of
// its topic, on every replica; 1,000 filters of ~110 KB held each node ~2 s per publish).

/** A subscription's filter: the attribute pairs a message must hold, every one. */
export type Filter = Readonly<Record<string, string>>;

/**
 * A filter's JSON (its attribute pairs, as stored) holds at most this many bytes of UTF-8: the API
 * refuses a larger one (routes/topics.ts). Not the state machine, which takes a filter made before
 * the limit as it is. 16 pairs of a key of 128 and a value of 1,024 characters passed the attributes'
 * schema, and at 6 bytes per escaped control character made ~110 KB of JSON; 4 KiB still holds every
 * filter of a few pairs of names and values, and bounds what one publish parses (1,000 subscriptions
 * of a topic: 4 MB) and one listSubscriptions answers.
 */
export const MAX_FILTER_BYTES = 4096;

/**
 * What the cache of one partition holds at most, in characters of filter JSON: about 6,000 filters of
 * a few pairs (a full topic has 1,000), or 250 at MAX_FILTER_BYTES. Past it the least recently used
 * go, and a publish reads and parses them again (a topic of 1,000 filters at the limit: about 19 ms
 * per publish, as before the cache). A character parsed takes at most 2 bytes: some 2 MiB per
 * partition at most, 32 MiB for a node's 16, only while that many filters are published to (4 MiB
 * per partition at first: 128 MiB a node, a fifth of what a node holds under load, for filters).
 */
export const FILTER_CACHE_CHARS = 1024 * 1024;

/** What an entry costs beyond its JSON (the map's entry, the object), counted so that no entry is free. */
const ENTRY_CHARS = 64;

/**
 * Parsed filters (null: none) by their subscription's channel id, least recently used first (a Map
 * keeps insertion order; a hit moves its entry to the end).
 *
 * What must hold for it to change no result: a channel id names one subscription's filter forever.
 * It does: a channel's id is the log index of the entry that made it (topics.ts, createSubscription),
 * so no other subscription ever has it, on this replica or any other, and no command changes a
 * filter after its creation (only createSubscription writes one). A rollback needs no care either: an
 * entry applied again makes the same subscription under the same id, and one that no longer exists is
 * never looked up (the ids come from the state). An entry of a deleted subscription stays until it is
 * the oldest. A state installed from an image is opened anew, with a cache of its own.
 */
export class FilterCache {
  private readonly byChannel = new Map<number, { readonly filter: Filter | null; readonly chars: number }>();
  /** The sum of the entries' chars: at most `maxChars`. */
  private chars = 0;

  constructor(private readonly maxChars = FILTER_CACHE_CHARS) {}

  /** The filter of subscription channel `id`, its stored JSON read by `text()` only when not cached. */
  of(id: number, text: () => string | null): Filter | null {
    const hit = this.byChannel.get(id);
    if (hit !== undefined) {
      this.byChannel.delete(id);
      this.byChannel.set(id, hit);
      return hit.filter;
    }
    const json = text();
    // Frozen: every later publish shares the object, so nothing may change it.
    const filter = json === null ? null : Object.freeze(JSON.parse(json) as Record<string, string>);
    // A filter made before MAX_FILTER_BYTES may be ~110 KB: a topic of those is parsed at every publish
    // as before the limit, rather than pushing every other filter out at each (JSON's characters are
    // at most its UTF-8 bytes, so every filter made since is cached).
    if (json !== null && json.length > MAX_FILTER_BYTES) return filter;
    const chars = (json?.length ?? 0) + ENTRY_CHARS;
    for (const [oldest, e] of this.byChannel) {
      if (this.chars + chars <= this.maxChars) break;
      this.byChannel.delete(oldest);
      this.chars -= e.chars;
    }
    this.byChannel.set(id, { filter, chars });
    this.chars += chars;
    return filter;
  }

  /** How many filters and characters of JSON it holds (tests). */
  get held(): { readonly filters: number; readonly chars: number } {
    return { filters: this.byChannel.size, chars: this.chars };
  }
}
