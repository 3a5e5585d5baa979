//! A request head from a decoded header block, checked as RFC 9113
//! §8.2–8.3 asks: pseudo-header fields first, each once, the right ones
//! for the method; lowercase names; no connection-specific fields; no
//! whitespace around values. A head that fails is malformed: the stream
//! is reset, the connection goes on.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};

/// Fields collected from one header block.
#[derive(Default)]
pub(crate) struct Collect {
    method: Option<Method>,
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    path: Option<PathAndQuery>,
    pub(crate) headers: HeaderMap,
    /// `cookie` crumbs, joined with "; " for HTTP/1.1 (RFC 9113 §8.2.3).
    cookie: Vec<u8>,
    regular_seen: bool,
    /// Why the head is malformed, once known; later fields are skipped.
    pub(crate) malformed: Option<&'static str>,
    /// Fields seen, to apply the configured limit.
    pub(crate) count: usize,
    trailers: bool,
}

/// A checked request head.
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    /// A valid `content-length`, which the DATA received must match.
    pub(crate) length: Option<u64>,
}

impl Collect {
    /// For a trailer block: pseudo-header fields are refused.
    pub(crate) fn trailers() -> Collect {
        Collect {
            trailers: true,
            ..Collect::default()
        }
    }

    /// Takes one decoded field.
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        self.count += 1;
        if self.malformed.is_none()
            && let Err(why) = self.take(name, value)
        {
            self.malformed = Some(why);
        }
    }

    fn take(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen || self.trailers {
                return Err("a pseudo-header field after a regular field or in trailers");
            }
            return self.pseudo(pseudo, value);
        }
        self.regular_seen = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err("an uppercase field name");
        }
        if matches!(
            name,
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
        ) {
            return Err("a connection-specific field");
        }
        if name == b"te" && value != b"trailers" {
            return Err("te other than \"trailers\"");
        }
        if matches!(value.first(), Some(b' ' | b'\t')) || matches!(value.last(), Some(b' ' | b'\t'))
        {
            return Err("whitespace around a field value");
        }
        if name == b"cookie" && !self.trailers {
            if !self.cookie.is_empty() {
                self.cookie.extend_from_slice(b"; ");
            }
            self.cookie.extend_from_slice(value);
            return Ok(());
        }
        let name = HeaderName::from_bytes(name).map_err(|_| "an invalid field name")?;
        let value = HeaderValue::from_bytes(value).map_err(|_| "an invalid field value")?;
        self.headers.append(name, value);
        Ok(())
    }

    fn pseudo(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        const TWICE: &str = "a pseudo-header field repeated";
        match name {
            b"method" if self.method.is_none() => {
                self.method = Some(Method::from_bytes(value).map_err(|_| "an invalid :method")?);
            }
            b"scheme" if self.scheme.is_none() => {
                self.scheme = Some(Scheme::try_from(value).map_err(|_| "an invalid :scheme")?);
            }
            b"authority" if self.authority.is_none() => {
                let a = Authority::try_from(value).map_err(|_| "an invalid :authority")?;
                // RFC 9113 §8.3.1: no userinfo in :authority.
                if a.as_str().contains('@') {
                    return Err("userinfo in :authority");
                }
                self.authority = Some(a);
            }
            b"path" if self.path.is_none() => {
                if value.is_empty() {
                    return Err("an empty :path");
                }
                self.path = Some(PathAndQuery::try_from(value).map_err(|_| "an invalid :path")?);
            }
            b"method" | b"scheme" | b"authority" | b"path" => return Err(TWICE),
            _ => return Err("an unknown pseudo-header field"),
        }
        Ok(())
    }

    /// The request head, or why it is malformed.
    pub(crate) fn finish(mut self) -> Result<Head, &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        if !self.cookie.is_empty() {
            let cookie = HeaderValue::from_bytes(&self.cookie).map_err(|_| "an invalid cookie")?;
            self.headers.insert(header::COOKIE, cookie);
        }
        let method = self.method.ok_or("no :method")?;
        let uri = if method == Method::CONNECT {
            // Authority form; the gateway refuses it with a 400 later.
            if self.scheme.is_some() || self.path.is_some() {
                return Err(":scheme or :path in a CONNECT request");
            }
            let authority = self.authority.ok_or("no :authority in a CONNECT request")?;
            Uri::from(authority)
        } else {
            let scheme = self.scheme.ok_or("no :scheme")?;
            let path = self.path.ok_or("no :path")?;
            let asterisk = path == "*" && method == Method::OPTIONS;
            if !(path.as_str().starts_with('/') || asterisk) {
                return Err("a :path that is neither absolute nor * for OPTIONS");
            }
            let mut parts = http::uri::Parts::default();
            if let Some(authority) = self.authority {
                parts.scheme = Some(scheme);
                parts.authority = Some(authority);
            }
            parts.path_and_query = Some(path);
            Uri::from_parts(parts).map_err(|_| "an invalid request target")?
        };
        let mut lengths = self.headers.get_all(header::CONTENT_LENGTH).iter();
        let length = match (lengths.next(), lengths.next()) {
            (Some(v), None) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.parse().ok()),
            _ => None,
        };
        Ok(Head {
            method,
            uri,
            headers: self.headers,
            length,
        })
    }

    /// The trailer fields, or why they are malformed.
    pub(crate) fn finish_trailers(self) -> Result<HeaderMap, &'static str> {
        match self.malformed {
            Some(why) => Err(why),
            None => Ok(self.headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> Result<Head, &'static str> {
        let mut c = Collect::default();
        for (n, v) in fields {
            c.field(n.as_bytes(), v.as_bytes());
        }
        c.finish()
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "api.test:8080"),
        (":path", "/a?b=1"),
    ];

    #[test]
    fn a_request_head_is_built() {
        let mut fields = GET.to_vec();
        fields.extend([("cookie", "a=1"), ("x-y", "z"), ("cookie", "b=2")]);
        let h = head(&fields).unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri, "http://api.test:8080/a?b=1");
        assert_eq!(h.headers["cookie"], "a=1; b=2");
        assert_eq!(h.headers["x-y"], "z");
    }

    #[test]
    fn malformed_heads_are_refused() {
        let with = |extra: (&'static str, &'static str)| {
            let mut f = GET.to_vec();
            f.push(extra);
            head(&f).err()
        };
        assert!(with(("X-Up", "1")).is_some());
        assert!(with(("connection", "close")).is_some());
        assert!(with(("transfer-encoding", "chunked")).is_some());
        assert!(with(("te", "gzip")).is_some());
        assert!(with(("te", "trailers")).is_none());
        assert!(with((":foo", "1")).is_some());
        assert!(with((":path", "/again")).is_some());
        assert!(with(("x", " padded")).is_some());
        assert!(with(("x", "padded\t")).is_some());
        assert!(head(&GET[1..]).is_err(), "no :method");
        assert!(head(&[GET[0], GET[1], GET[2]]).is_err(), "no :path");
        let late = [GET[0], GET[1], ("x", "1"), GET[3]];
        assert!(head(&late).is_err(), "pseudo after regular");
        assert!(head(&[(":method", "GET"), (":scheme", "http"), (":path", "x")]).is_err());
    }

    #[test]
    fn the_length_is_read_when_valid() {
        let mut f = GET.to_vec();
        f.push(("content-length", "12"));
        assert_eq!(head(&f).unwrap().length, Some(12));
        f.push(("content-length", "12"));
        assert_eq!(
            head(&f).unwrap().length,
            None,
            "repeated: the proxy refuses it"
        );
    }

    #[test]
    fn trailers_take_no_pseudo_fields() {
        let mut t = Collect::trailers();
        t.field(b"grpc-status", b"0");
        assert_eq!(t.finish_trailers().unwrap()["grpc-status"], "0");
        let mut t = Collect::trailers();
        t.field(b":status", b"200");
        assert!(t.finish_trailers().is_err());
    }
}
