// Subscription filters as a publish matches them (review of stop 62: every publish read and parsed the
// JSON filter of every subscription of its topic, on every replica; 1,000 filters of ~110 KB held each
// node ~2 s per publish).

/**
 * A filter's JSON (its attribute pairs, as stored) holds at most this many bytes of UTF-8: the API
 * refuses a larger one (routes/topics.ts). Not the state machine, which takes a filter made before
 * the limit as it is. 16 pairs of a key of 128 and a value of 1,024 characters passed the attributes'
 * schema, and at 6 bytes per escaped control character made ~110 KB of JSON; 4 KiB still holds every
 * filter of a few pairs of names and values, and bounds what one publish parses (1,000 subscriptions
 * of a topic: 4 MB) and one listSubscriptions answers.
 */
export const MAX_FILTER_BYTES = 4096;
