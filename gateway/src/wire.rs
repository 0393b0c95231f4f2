//! MQTT 3.1.1 framing, the little of it the gateway reads and writes itself: the fixed header,
//! strings, a few packets, and async readers that hold at most a header or a topic in memory
//! (payloads are streamed past). Used by [`crate::scrub`] (clearing what no connection can
//! read) and the embedded broker's front (its ACL). The client connections use rumqttc.

// the CONNECT, SUBSCRIBE and acknowledgement parts serve the embedded broker's front only
#![cfg_attr(not(feature = "embedded-broker"), allow(dead_code))]

use tokio::io::{AsyncRead, AsyncReadExt};

/// PUBLISH, SUBSCRIBE, ... (the upper four bits of a packet's first byte).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBREL: u8 = 6;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;

/// A packet that is not what MQTT 3.1.1 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not MQTT 3.1.1: {0}")]
pub struct Malformed(pub &'static str);

impl From<Malformed> for std::io::Error {
    fn from(m: Malformed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, m)
    }
}

/// The remaining-length field of MQTT (1 to 4 bytes, 7 bits each, least significant first).
pub fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

/// A length-prefixed string (cut at 65,535 bytes).
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let n = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(n)]);
}

/// A whole packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

pub fn puback(id: u16) -> Vec<u8> {
    packet(0x40, &id.to_be_bytes())
}

pub fn pubrec(id: u16) -> Vec<u8> {
    packet(0x50, &id.to_be_bytes())
}

pub fn pubcomp(id: u16) -> Vec<u8> {
    packet(0x70, &id.to_be_bytes())
}

/// CONNACK with return code `code` (0 accepted, 5 not authorized), no session present.
pub fn connack(code: u8) -> Vec<u8> {
    packet(0x20, &[0, code])
}

/// SUBACK for packet `id`, one return code per filter (0..=2 granted QoS, 0x80 failure).
pub fn suback(id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// A packet's fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub flags: u8,
    /// Bytes after the fixed header.
    pub len: usize,
    /// Bytes of the fixed header itself.
    pub size: usize,
}

impl Header {
    /// The fixed header at the start of `b`: `Ok(None)` while incomplete.
    pub fn parse(b: &[u8]) -> Result<Option<Header>, Malformed> {
        let Some(&first) = b.first() else {
            return Ok(None);
        };
        let (mut len, mut shift) = (0usize, 0u32);
        for (i, &byte) in b.iter().enumerate().skip(1).take(4) {
            len |= usize::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(Some(Header {
                    kind: first >> 4,
                    flags: first & 0x0F,
                    len,
                    size: i + 1,
                }));
            }
            shift += 7;
        }
        if b.len() >= 5 {
            Err(Malformed("remaining length over 4 bytes"))
        } else {
            Ok(None)
        }
    }

    /// The header's own bytes, as they were sent.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.kind << 4 | self.flags];
        put_len(&mut out, self.len);
        out
    }
}

/// Reads fields off the front of a packet's body.
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.0.split_first().ok_or(Malformed("short packet"))?;
        self.0 = rest;
        Ok(b)
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    /// A length-prefixed string or binary field.
    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = usize::from(self.u16()?);
        if self.0.len() < n {
            return Err(Malformed("a field longer than its packet"));
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(s)
    }

    /// A UTF-8 string field.
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("a string that is not UTF-8"))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A CONNECT packet's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// "MQTT" (3.1.1) or "MQIsdp" (3.1).
    pub protocol: String,
    pub level: u8,
    /// The connect flags, without the username and password bits.
    pub flags: u8,
    pub keep_alive: u16,
    pub client_id: String,
    /// The Will's topic and message.
    pub will: Option<(String, Vec<u8>)>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl Connect {
    /// A CONNECT's body (after the fixed header).
    pub fn parse(body: &[u8]) -> Result<Connect, Malformed> {
        let mut f = Fields(body);
        let protocol = f.str()?.to_owned();
        let level = f.u8()?;
        if !matches!((protocol.as_str(), level), ("MQTT", 4) | ("MQIsdp", 3)) {
            return Err(Malformed("a protocol other than MQTT 3.1 or 3.1.1"));
        }
        let all = f.u8()?;
        let keep_alive = f.u16()?;
        let client_id = f.str()?.to_owned();
        let will = if all & 0x04 != 0 {
            Some((f.str()?.to_owned(), f.bytes()?.to_vec()))
        } else {
            None
        };
        let username = if all & 0x80 != 0 {
            Some(f.str()?.to_owned())
        } else {
            None
        };
        let password = if all & 0x40 != 0 {
            Some(f.bytes()?.to_vec())
        } else {
            None
        };
        Ok(Connect {
            protocol,
            level,
            flags: all & 0x3F,
            keep_alive,
            client_id,
            will,
            username,
            password,
        })
    }

    /// The whole packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_str(&mut body, self.protocol.as_bytes());
        body.push(self.level);
        let mut flags = self.flags;
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive.to_be_bytes());
        put_str(&mut body, self.client_id.as_bytes());
        if let Some((topic, message)) = &self.will {
            put_str(&mut body, topic.as_bytes());
            put_str(&mut body, message);
        }
        if let Some(u) = &self.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut body, p);
        }
        packet(CONNECT << 4, &body)
    }
}

/// Reads exactly `n` bytes into a new vector (small reads only: headers, topics).
pub async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).await?;
    Ok(v)
}

/// Reads and drops `n` bytes, 64 KiB at a time.
pub async fn skip<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> std::io::Result<()> {
    pass(s, &mut tokio::io::sink(), n).await
}

/// Copies exactly `n` bytes from `r` to `w`, streamed.
pub async fn pass<R, W>(r: &mut R, w: &mut W, n: usize) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let copied = tokio::io::copy(&mut r.take(n as u64), w).await?;
    if copied < n as u64 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The next packet's fixed header.
pub async fn header<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Header> {
    let mut b = Vec::with_capacity(5);
    loop {
        b.push(s.read_u8().await?);
        if let Some(h) = Header::parse(&b)? {
            return Ok(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_headers_read_back() {
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut b = vec![0x30];
            put_len(&mut b, n);
            let h = Header::parse(&b).unwrap().unwrap();
            assert_eq!((h.kind, h.len, h.size), (3, n, b.len()), "{n}");
            assert_eq!(h.bytes(), b);
            // one byte short: incomplete, not an error
            if b.len() > 2 {
                assert_eq!(Header::parse(&b[..b.len() - 1]).unwrap(), None);
            }
        }
        assert!(Header::parse(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        assert_eq!(Header::parse(&[]).unwrap(), None);
    }

    #[test]
    fn fields_read_what_was_put() {
        let mut b = vec![7];
        put_str(&mut b, b"a/b");
        b.extend_from_slice(&513u16.to_be_bytes());
        let mut f = Fields(&b);
        assert_eq!(f.u8(), Ok(7));
        assert_eq!(f.str(), Ok("a/b"));
        assert_eq!(f.u16(), Ok(513));
        assert!(f.is_empty());
        assert!(f.u8().is_err());
        // a string longer than what is left
        assert!(Fields(&[0, 9, b'x']).bytes().is_err());
        assert!(Fields(&[0, 1, 0xFF]).str().is_err());
    }

    #[test]
    fn packets_are_what_mqtt_3_1_1_says() {
        assert_eq!(puback(258), [0x40, 2, 1, 2]);
        assert_eq!(pubrec(1), [0x50, 2, 0, 1]);
        assert_eq!(pubcomp(1), [0x70, 2, 0, 1]);
        assert_eq!(connack(5), [0x20, 2, 0, 5]);
        assert_eq!(suback(3, &[1, 0x80]), [0x90, 4, 0, 3, 1, 0x80]);
    }

    #[test]
    fn a_connect_reads_back_and_takes_new_credentials() {
        let c = Connect {
            protocol: "MQTT".into(),
            level: 4,
            flags: 0x02 | 0x04 | 0x20,
            keep_alive: 30,
            client_id: "leakmon-agent-a-0123".into(),
            will: Some(("leakmon/v1/nodes/a/status".into(), b"gone".to_vec())),
            username: Some("u".into()),
            password: None,
        };
        let bytes = c.to_bytes();
        let h = Header::parse(&bytes).unwrap().unwrap();
        assert_eq!(h.kind, CONNECT);
        assert_eq!(Connect::parse(&bytes[h.size..]), Ok(c.clone()));
        let mut inner = c.clone();
        inner.username = Some("front".into());
        inner.password = Some(b"secret".to_vec());
        let again = inner.to_bytes();
        assert_eq!(Connect::parse(&again[h.size..]).unwrap(), inner);
        // MQTT 5 and garbage are refused
        let mut v5 = c.clone();
        v5.level = 5;
        assert!(Connect::parse(&v5.to_bytes()[h.size..]).is_err());
        assert!(Connect::parse(&[0, 4, b'M']).is_err());
    }

    #[tokio::test]
    async fn skip_streams_and_knows_a_short_read() {
        let data = vec![1u8; 200_000];
        let mut r: &[u8] = &data;
        skip(&mut r, 150_000).await.unwrap();
        assert_eq!(r.len(), 50_000);
        assert!(skip(&mut r, 50_001).await.is_err());
    }
}
