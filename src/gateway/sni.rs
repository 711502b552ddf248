//! The server name of a TLS ClientHello, read without consuming it (TLS passthrough).
//!
//! Pure: given the bytes peeked so far, says whether more are needed, what the SNI host name
//! is (or that there is none), or that the bytes are not a TLS ClientHello. Only the first
//! record is read; a ClientHello split over several records (legal, never seen from real
//! clients for the first record's extensions) is refused rather than reassembled.

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Need at least this many bytes in total.
    NeedMore(usize),
    /// A ClientHello; its SNI host name if it has one.
    Parsed(Option<String>),
    /// Not a TLS ClientHello (and why).
    Invalid(&'static str),
}

/// The largest TLS record (2^14 plus expansion allowance).
pub const MAX_RECORD: usize = 5 + 16_384 + 2_048;

/// Reads the SNI from the start of a TLS stream.
pub fn parse(buf: &[u8]) -> Hello {
    if buf.len() < 5 {
        return Hello::NeedMore(5);
    }
    if buf[0] != 0x16 {
        return Hello::Invalid("not a TLS handshake record");
    }
    if buf[1] != 3 {
        return Hello::Invalid("not a TLS record version");
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len == 0 || 5 + len > MAX_RECORD {
        return Hello::Invalid("bad TLS record length");
    }
    if buf.len() < 5 + len {
        return Hello::NeedMore(5 + len);
    }
    match client_hello(&buf[5..5 + len]) {
        Ok(sni) => Hello::Parsed(sni),
        Err(e) => Hello::Invalid(e),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated ClientHello");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello(record: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return Err("not a ClientHello");
    }
    let b = r.take(3)?;
    let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
    let mut h = Reader(
        r.take(len)
            .map_err(|_| "ClientHello spans several records")?,
    );
    h.take(2)?; // legacy_version
    h.take(32)?; // random
    h.vec8()?; // session id
    h.vec16()?; // cipher suites
    h.vec8()?; // compression methods
    if h.0.is_empty() {
        return Ok(None);
    }
    let mut ext = Reader(h.vec16()?);
    while !ext.0.is_empty() {
        let ty = ext.u16()?;
        let body = ext.vec16()?;
        if ty != 0 {
            continue;
        }
        let mut list = Reader(Reader(body).vec16()?);
        while !list.0.is_empty() {
            let kind = list.u8()?;
            let name = list.vec16()?;
            if kind == 0 {
                let name = std::str::from_utf8(name).map_err(|_| "SNI is not ASCII")?;
                if name.is_empty() || !name.is_ascii() {
                    return Err("SNI is not a host name");
                }
                return Ok(Some(name.to_ascii_lowercase()));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for a given server name.
    fn hello(sni: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let Ok(cfg) = cfg else {
            return Vec::new();
        };
        let name = rustls::pki_types::ServerName::try_from(sni.to_string());
        let Ok(name) = name else {
            return Vec::new();
        };
        let Ok(mut c) = rustls::ClientConnection::new(Arc::new(cfg), name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let _ = c.write_tls(&mut out);
        out
    }

    #[test]
    fn reads_the_server_name_of_a_real_client_hello_at_any_split() {
        let h = hello("Echo.Example.com");
        assert!(h.len() > 100, "rustls wrote a ClientHello");
        assert_eq!(parse(&h), Hello::Parsed(Some("echo.example.com".into())));
        for cut in [0, 3, 5, 40, h.len() - 1] {
            assert!(
                matches!(parse(&h[..cut]), Hello::NeedMore(n) if n > cut),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_ip_address_server_name_sends_no_sni() {
        // rustls sends no SNI for an IP address.
        assert_eq!(parse(&hello("192.0.2.1")), Hello::Parsed(None));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Hello::Invalid("not a TLS handshake record")
        );
        assert_eq!(
            parse(&[0x16, 3, 1, 0, 0]),
            Hello::Invalid("bad TLS record length")
        );
        assert!(matches!(
            parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Hello::Invalid(_)
        ));
        let mut h = hello("a.example");
        h[6] = 0xff; // handshake length beyond the record
        assert_eq!(
            parse(&h),
            Hello::Invalid("ClientHello spans several records")
        );
    }
}
