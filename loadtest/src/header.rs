//! The small JSON header every published update carries in its `data`.
//!
//! `{"seq":N,"t":T,"lane":L,"topic":K,"pad":"xxx"}`: `seq` counts the updates one publishing lane
//! sent to one topic (from 0, without gaps), `t` is the publish time in Unix microseconds, and
//! `pad` fills the data up to the requested payload size. Receivers parse it on every delivery, so
//! [`UpdateHeader::parse`] is a hand-written scanner of this flat object rather than a full JSON
//! parse; anything it does not recognise is reported as a foreign update, never guessed at.

/// What a receiver needs to know about one update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UpdateHeader {
    /// Position of the update in its (lane, topic) sequence.
    pub(crate) seq: u64,
    /// Publish time, Unix microseconds (taken just before the HTTP request is sent).
    pub(crate) t_us: u64,
    /// The publishing lane (one sequential publisher).
    pub(crate) lane: u32,
    /// Index of the topic in the run's topic list.
    pub(crate) topic: u32,
}

impl UpdateHeader {
    /// The update's `data`, padded with `x` to at least `payload_bytes` bytes.
    pub(crate) fn encode(&self, payload_bytes: usize) -> String {
        let mut out = format!(
            "{{\"seq\":{},\"t\":{},\"lane\":{},\"topic\":{},\"pad\":\"",
            self.seq, self.t_us, self.lane, self.topic
        );
        let pad = payload_bytes.saturating_sub(out.len() + 2);
        out.push_str(&"x".repeat(pad));
        out.push_str("\"}");
        out
    }

    /// Parses a header written by [`UpdateHeader::encode`]; `None` for anything else.
    pub(crate) fn parse(data: &[u8]) -> Option<Self> {
        let mut scan = Scanner { data, pos: 0 };
        scan.expect(b'{')?;
        let (mut seq, mut t_us, mut lane, mut topic) = (None, None, None, None);
        loop {
            scan.expect(b'"')?;
            let key = scan.until(b'"')?;
            scan.expect(b':')?;
            if scan.peek()? == b'"' {
                // A string value (the padding): skip it. Our strings never contain escapes.
                scan.pos += 1;
                scan.until(b'"')?;
            } else {
                let value = scan.number()?;
                match key {
                    b"seq" => seq = Some(value),
                    b"t" => t_us = Some(value),
                    b"lane" => lane = Some(u32::try_from(value).ok()?),
                    b"topic" => topic = Some(u32::try_from(value).ok()?),
                    _ => {}
                }
            }
            match scan.peek()? {
                b',' => scan.pos += 1,
                b'}' => break,
                _ => return None,
            }
        }
        Some(Self {
            seq: seq?,
            t_us: t_us?,
            lane: lane?,
            topic: topic?,
        })
    }
}

/// A cursor over the header bytes.
struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// The bytes up to `end` (exclusive), consuming `end` too.
    fn until(&mut self, end: u8) -> Option<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let len = rest.iter().position(|&b| b == end)?;
        self.pos += len + 1;
        Some(&rest[..len])
    }

    fn number(&mut self) -> Option<u64> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.pos += 1;
        }
        (self.pos > start).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let h = UpdateHeader {
            seq: 42,
            t_us: 1_700_000_000_123_456,
            lane: 3,
            topic: 7,
        };
        let data = h.encode(200);
        assert_eq!(data.len(), 200);
        assert_eq!(UpdateHeader::parse(data.as_bytes()), Some(h));
        let short = h.encode(0);
        assert_eq!(UpdateHeader::parse(short.as_bytes()), Some(h));
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["seq"], 42);
    }

    #[test]
    fn refuses_foreign_data() {
        assert_eq!(UpdateHeader::parse(b"hello"), None);
        assert_eq!(UpdateHeader::parse(b"{\"seq\":1}"), None);
        assert_eq!(
            UpdateHeader::parse(b"{\"seq\":-1,\"t\":1,\"lane\":0,\"topic\":0}"),
            None
        );
        assert_eq!(UpdateHeader::parse(b""), None);
    }
}
