//! Where updates live in Redis: stream and epoch key names, Redis Cluster hash slots, and the
//! partition an update belongs to.
//!
//! Everything here is a pure function of the configuration, computed the same way on every node and
//! by every version: a node that named or partitioned differently would read the wrong streams or
//! split one topic over two streams. The tag search and the topic hashes must therefore never
//! change; the unit tests pin their output. There are two topic hashes ([`PartitionHash`]): FNV-1a,
//! and the one nginx routes requests by, so that a load balancer can send every topic of a
//! partition to the same node.
//!
//! - One partition: the stream is `<prefix>:updates`.
//! - `P` partitions: stream `i` is `<prefix>:{<tag_i>}`. Bare tags `{0}`, `{1}`, … hash to slots that
//!   cluster unevenly under CRC16 (many partitions can land on one master while others idle), so each
//!   tag is the first short string whose slot is nearest to the centre of the `i`-th of `P` equal
//!   slices of the 16384 slots, which spreads the streams evenly over any even slot assignment.
//! - With `G` shared slots (`partition_slots`, `0 < G < P`), stream `i` is
//!   `<prefix>:{<tag_(i mod G)>}:<i>`: the tag of group `i mod G` among `G` (spread as above), so
//!   the partitions of a group share one slot and one command can read them all; the name stays
//!   unique per partition.
//! - Each stream's epoch marker shares its stream's hash slot (`<stream>:epoch` with the same tag, or
//!   `{<stream>}:epoch` for the untagged single stream), so a master that lost the stream lost the
//!   marker too and the change is seen.
//! - Subscription events have a stream of their own beside partition 0's (`<stream>:events`, or
//!   `{<stream>}:events`), in the same hash slot, so one read (and one script) reaches both.
//! - With retention rules, each retention class keeps its history in a stream of its own beside
//!   each partition's (`<stream>:retain:<class>`, or `{<stream>}:retain:<class>`, the class named
//!   by its window, e.g. `n100`), in the same hash slot, so the script that stores an update
//!   reaches them all.

/// Number of hash slots in Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// Upper bound on partitions (streams): enough for any cluster, small enough that every partition
/// gets its own well-spread slot.
pub(crate) const MAX_PARTITIONS: u16 = 1024;

/// Characters of the candidate tags, in search order.
const TAG_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Longest candidate tag; strings of up to 3 characters (about 48 000) cover ~95% of the slots.
const TAG_MAX_LEN: usize = 3;

/// The keys of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamKeys {
    /// The Redis stream holding the partition's updates.
    pub(crate) stream: String,
    /// The random value renewed whenever the stream is recreated (see the module docs of `redis`).
    pub(crate) epoch: String,
    /// The stream of subscription events, beside partition 0's updates.
    pub(crate) events: String,
    /// What the history stream of a retention class is named after (`<retain><class tag>`).
    pub(crate) retain: String,
}

impl StreamKeys {
    /// The history stream of the retention class tagged `tag`, in this partition.
    pub(crate) fn class(&self, tag: &str) -> String {
        format!("{}{tag}", self.retain)
    }
}

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum Redis Cluster hashes keys with.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The Redis Cluster hash slot of `key`, honouring hash tags: when the key holds `{…}` with at least
/// one character between the first `{` and the next `}`, only that part is hashed.
pub fn hash_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16(hashed) % SLOTS
}

/// How a topic is mapped to its partition. Every node of a cluster must use the same one (like the
/// number of partitions): a node that hashed differently would store and look for a topic in
/// another stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionHash {
    /// FNV-1a (64 bit) of the topic, modulo the partitions.
    #[default]
    Fnv1a,
    /// The hash nginx's `hash $arg_topic;` (without `consistent`) routes a request by: CRC-32 of
    /// the topic as a query string carries it (`application/x-www-form-urlencoded`, the encoding of
    /// browsers' `URLSearchParams`), bits 16 to 30, modulo the partitions. nginx sends that request
    /// to upstream server `h mod N`; with `P` a multiple of `N`, `(h mod P) mod N = h mod N`, so
    /// every topic of partition `p` is routed to server `p mod N` and each partition is read by one
    /// node (see the README, "Routing by partition").
    Nginx,
}

/// The partition of an update whose canonical topic is `topic` (see [`PartitionHash`]). Fixed
/// functions (not std's randomized hasher) so every node and version agrees, which keeps each topic
/// in one stream and so in one order.
pub(crate) fn partition_of(topic: &str, partitions: u16, hash: PartitionHash) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let hash = match hash {
        PartitionHash::Fnv1a => fnv1a(topic),
        PartitionHash::Nginx => u64::from(nginx_hash(topic)),
    };
    (hash % u64::from(partitions)) as u16
}

fn fnv1a(topic: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in topic.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// nginx's first-try upstream hash of `topic` as the value of a query parameter (see
/// [`PartitionHash::Nginx`]): the encoding is streamed into the checksum, nothing is allocated.
fn nginx_hash(topic: &str) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for piece in form_urlencoded::byte_serialize(topic.as_bytes()) {
        crc.update(piece.as_bytes());
    }
    (crc.finalize() >> 16) & 0x7fff
}

/// The keys of every partition, index = partition; `slots` shared slot groups (0: one slot per
/// partition, see the module docs).
pub(crate) fn stream_keys(prefix: &str, partitions: u16, slots: u16) -> Vec<StreamKeys> {
    if partitions <= 1 {
        let stream = format!("{prefix}:updates");
        let epoch = format!("{{{stream}}}:epoch");
        let events = format!("{{{stream}}}:events");
        let retain = format!("{{{stream}}}:retain:");
        return vec![StreamKeys {
            stream,
            epoch,
            events,
            retain,
        }];
    }
    let streams: Vec<String> = if slots == 0 || slots >= partitions {
        partition_tags(partitions)
            .into_iter()
            .map(|tag| format!("{prefix}:{{{tag}}}"))
            .collect()
    } else {
        let tags = partition_tags(slots);
        (0..partitions)
            .map(|i| format!("{prefix}:{{{}}}:{i}", tags[usize::from(i % slots)]))
            .collect()
    };
    streams
        .into_iter()
        .map(|stream| {
            let epoch = format!("{stream}:epoch");
            let events = format!("{stream}:events");
            let retain = format!("{stream}:retain:");
            StreamKeys {
                stream,
                epoch,
                events,
                retain,
            }
        })
        .collect()
}

/// The reader group of `partition` (see the `interest` module docs): partitions of one group are
/// read by one command, at most `per_reader` of them. On a plain server the partitions are cut
/// into runs of `per_reader` (`p / per_reader`); on Redis Cluster a group also shares a hash slot:
/// partition `p` alone without shared slots; with `slots` shared slots, the partitions of slot
/// `p mod slots` cut into runs of `per_reader` (group `p mod slots` holds the first run, so
/// partition `g < slots` is in group `g`).
pub(crate) fn reader_group(partition: u16, cluster: bool, slots: u16, per_reader: u16) -> u16 {
    let per_reader = per_reader.max(1);
    match (cluster, slots) {
        (false, _) => partition / per_reader,
        (true, 0) => partition,
        (true, slots) => (partition / slots / per_reader) * slots + partition % slots,
    }
}

/// One hash tag per partition, each hashing to the slot nearest the centre of its slice of the slot
/// space (ties and equal distances resolved by a fixed search order, so the table is deterministic).
pub(crate) fn partition_tags(partitions: u16) -> Vec<String> {
    let partitions = partitions.clamp(1, MAX_PARTITIONS);
    let candidates = candidate_tags();
    // The first candidate (in search order) for each slot.
    let mut by_slot: Vec<Option<usize>> = vec![None; usize::from(SLOTS)];
    for (index, tag) in candidates.iter().enumerate() {
        let slot = usize::from(crc16(tag.as_bytes()) % SLOTS);
        by_slot[slot].get_or_insert(index);
    }
    let mut used = vec![false; candidates.len()];
    let slots = i64::from(SLOTS);
    (0..i64::from(partitions))
        .map(|i| {
            let target = (2 * i + 1) * slots / (2 * i64::from(partitions));
            // Walk outwards from the target: target, target-1, target+1, target-2, …
            let chosen = (0..slots)
                .flat_map(|d| [target - d, target + d])
                .filter(|slot| (0..slots).contains(slot))
                .find_map(|slot| by_slot[slot as usize].filter(|&index| !used[index]));
            match chosen {
                Some(index) => {
                    used[index] = true;
                    candidates[index].clone()
                }
                // Unreachable with at most MAX_PARTITIONS partitions and ~48k candidates; keeps the
                // function total without a panic.
                None => format!("p{i}"),
            }
        })
        .collect()
}

/// Every string of 1 to `TAG_MAX_LEN` characters of the alphabet, shortest first.
fn candidate_tags() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut previous: Vec<String> = vec![String::new()];
    for _ in 0..TAG_MAX_LEN {
        let mut next = Vec::with_capacity(previous.len() * TAG_ALPHABET.len());
        for stem in &previous {
            for &c in TAG_ALPHABET {
                let mut tag = stem.clone();
                tag.push(char::from(c));
                next.push(tag);
            }
        }
        out.extend(next.iter().cloned());
        previous = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis() {
        // The check value of CRC16-XMODEM and the values from the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        assert_eq!(hash_slot("{user1000}.followers"), hash_slot("user1000"));
        // An empty tag is not a tag: the whole key is hashed.
        assert_eq!(hash_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(hash_slot("foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
    }

    #[test]
    fn partition_slots_are_spread_evenly() {
        for partitions in [2u16, 3, 4, 6, 8, 16, 32, 64, 128, 1024] {
            let keys = stream_keys("quicksilver", partitions, 0);
            let slice = f64::from(SLOTS) / f64::from(partitions);
            let mut seen = std::collections::HashSet::new();
            for (i, k) in keys.iter().enumerate() {
                let slot = hash_slot(&k.stream);
                assert_eq!(slot, hash_slot(&k.epoch), "epoch shares the stream's slot");
                assert_eq!(slot, hash_slot(&k.events), "events share the stream's slot");
                assert_eq!(
                    slot,
                    hash_slot(&k.class("n100")),
                    "classes share the stream's slot"
                );
                assert!(seen.insert(slot), "two partitions on slot {slot}");
                // Each partition sits inside its own slice of the slot space, so any even assignment
                // of slots to masters gives each master the same number of partitions (±1).
                let owner = (f64::from(slot) / slice) as usize;
                assert_eq!(
                    owner, i,
                    "partition {i} of {partitions} landed on slot {slot}"
                );
            }
        }
    }

    #[test]
    fn three_partitions_land_on_three_default_masters() {
        // `redis-cli --cluster create` with 3 masters assigns 0-5460, 5461-10922, 10923-16383.
        let slots: Vec<u16> = stream_keys("quicksilver", 3, 0)
            .iter()
            .map(|k| hash_slot(&k.stream))
            .collect();
        assert!(slots[0] <= 5460);
        assert!((5461..=10922).contains(&slots[1]));
        assert!(slots[2] >= 10923);
    }

    #[test]
    fn tag_table_is_pinned() {
        // Changing these renames every partitioned stream and orphans stored history: never update
        // this expectation without a migration.
        assert_eq!(partition_tags(4), vec!["5nw", "h85", "7l1", "b3k"]);
        assert_eq!(partition_tags(4), partition_tags(4), "deterministic");
        let slots: Vec<u16> = partition_tags(4).iter().map(|t| hash_slot(t)).collect();
        assert_eq!(
            slots,
            vec![2048, 6144, 10240, 14336],
            "each at its slice's centre"
        );
    }

    #[test]
    fn single_partition_keys() {
        let keys = stream_keys("qs", 1, 0);
        assert_eq!(keys[0].stream, "qs:updates");
        assert_eq!(keys[0].epoch, "{qs:updates}:epoch");
        assert_eq!(hash_slot(&keys[0].stream), hash_slot(&keys[0].epoch));
        assert_eq!(keys[0].events, "{qs:updates}:events");
        assert_eq!(hash_slot(&keys[0].stream), hash_slot(&keys[0].events));
        assert_eq!(keys[0].class("n100"), "{qs:updates}:retain:n100");
        assert_eq!(hash_slot(&keys[0].stream), hash_slot(&keys[0].class("n0")));
    }

    #[test]
    fn shared_slots_group_partitions_by_slot() {
        let keys = stream_keys("qs", 8, 2);
        let tags = partition_tags(2);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(k.stream, format!("qs:{{{}}}:{i}", tags[i % 2]));
            assert_eq!(hash_slot(&k.stream), hash_slot(&keys[i % 2].stream));
            assert_eq!(hash_slot(&k.epoch), hash_slot(&k.stream));
            assert_eq!(hash_slot(&k.events), hash_slot(&k.stream));
            assert_eq!(hash_slot(&k.class("n1")), hash_slot(&k.stream));
            assert_eq!(reader_group(i as u16, true, 2, 1024), (i % 2) as u16);
        }
        assert_ne!(hash_slot(&keys[0].stream), hash_slot(&keys[1].stream));
        let names: std::collections::HashSet<_> = keys.iter().map(|k| &k.stream).collect();
        assert_eq!(names.len(), 8, "one stream per partition");
        assert_eq!(
            stream_keys("qs", 8, 8),
            stream_keys("qs", 8, 0),
            "P slots: as without"
        );
        assert_eq!(reader_group(5, false, 0, 1024), 0, "plain redis: one group");
        assert_eq!(reader_group(5, true, 0, 1024), 5, "cluster: one slot each");
        // At most `per_reader` partitions a group, each group within one slot.
        assert_eq!(reader_group(15, false, 0, 16), 0);
        assert_eq!(reader_group(16, false, 0, 16), 1);
        for p in 0..64u16 {
            let g = reader_group(p, true, 4, 4);
            assert_eq!(g % 4, p % 4, "same slot");
            assert_eq!(
                (0..64u16)
                    .filter(|&q| reader_group(q, true, 4, 4) == g)
                    .count(),
                4
            );
        }
    }

    #[test]
    fn topics_map_to_stable_partitions() {
        let fnv = PartitionHash::Fnv1a;
        assert_eq!(partition_of("anything", 1, fnv), 0);
        let p = partition_of("https://example.com/books/1", 8, fnv);
        assert_eq!(p, partition_of("https://example.com/books/1", 8, fnv));
        assert!(p < 8);
        // Pinned: FNV-1a is fixed across versions.
        assert_eq!(
            partition_of("", 7, fnv),
            (0xcbf2_9ce4_8422_2325u64 % 7) as u16
        );
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[usize::from(partition_of(&format!("/topic/{i}"), 8, fnv))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
    #[test]
    fn the_nginx_hash_is_the_crc_of_the_query_encoded_topic() {
        // Pinned against zlib's CRC-32 of the encoded strings: nginx hashes the raw query value.
        assert_eq!(nginx_hash("https://example.com/books/1"), 24_513); // https%3A%2F%2Fexample.com%2Fbooks%2F1
        assert_eq!(nginx_hash("session-42"), 15_191);
        assert_eq!(nginx_hash("a b*~!"), 20_106); // a+b*%7E%21
        let nginx = PartitionHash::Nginx;
        assert_eq!(partition_of("https://example.com/books/1", 12, nginx), 9);
        // With P a multiple of N, a topic's partition names its upstream server: p mod N.
        for topic in ["https://example.com/books/1", "session-42", "a b*~!"] {
            let h = nginx_hash(topic);
            assert_eq!(
                partition_of(topic, 240, nginx) % 6,
                (h % 6) as u16,
                "{topic}"
            );
        }
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[usize::from(partition_of(&format!("/topic/{i}"), 8, nginx))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
