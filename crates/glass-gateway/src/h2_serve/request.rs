//! A request head from a decoded header block, checked as RFC 9113
//! §8.2–8.3 asks: pseudo-header fields first, each once, the right ones
//! for the method; lowercase names; no connection-specific fields; no
//! whitespace around values. A head that fails is malformed: the stream
//! is reset, the connection goes on.

use std::ops::Range;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Uri};

use crate::headers::{self, Fields};
use crate::upstream_head::ClientHead;

/// The fields of one header block as decoded, checked as they come. One
/// per connection, reused: a request that takes the own HTTP/1.1
/// upstream path is encoded from here without a `HeaderMap`.
#[derive(Default)]
pub(crate) struct Collect {
    /// Names and values, back to back.
    bytes: Vec<u8>,
    /// Regular fields as (name, value) in `bytes`, in order.
    fields: Vec<(Range<usize>, Range<usize>)>,
    method: Option<Method>,
    scheme: Option<Range<usize>>,
    authority: Option<Range<usize>>,
    path: Option<Range<usize>>,
    /// `cookie` crumbs, joined with "; " (RFC 9113 §8.2.3), and where the
    /// joined field went.
    cookie: Vec<u8>,
    regular_seen: bool,
    /// Why the head is malformed, once known; later fields are skipped.
    pub(crate) malformed: Option<&'static str>,
    /// Fields seen, to apply the configured limit.
    pub(crate) count: usize,
    trailers: bool,
    hosts: usize,
    lengths: usize,
    /// The value of the only `content-length`, if valid.
    pub(crate) length: Option<u64>,
    pub(crate) grpc: bool,
    request_id: Option<Range<usize>>,
    traceparent: Option<Range<usize>>,
}

/// A checked request head, for the general path.
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

impl Collect {
    /// Empties the collection for the next block (trailers or a head).
    pub(crate) fn reset(&mut self, trailers: bool) {
        let (mut bytes, mut fields, mut cookie) = (
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.fields),
            std::mem::take(&mut self.cookie),
        );
        bytes.clear();
        fields.clear();
        cookie.clear();
        *self = Collect {
            bytes,
            fields,
            cookie,
            trailers,
            ..Collect::default()
        };
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

    fn push(&mut self, b: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        start..self.bytes.len()
    }

    fn bytes(&self, r: &Range<usize>) -> &[u8] {
        &self.bytes[r.clone()]
    }

    fn take(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen || self.trailers {
                return Err("a pseudo-header field after a regular field or in trailers");
            }
            return self.pseudo(pseudo, value);
        }
        self.regular_seen = true;
        if name.is_empty() || !name.iter().all(|&b| is_name_byte(b)) {
            return Err("an invalid or uppercase field name");
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
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err("a control character in a field value");
        }
        if self.trailers {
            let (n, v) = (self.push(name), self.push(value));
            self.fields.push((n, v));
            return Ok(());
        }
        match name {
            b"cookie" => {
                if !self.cookie.is_empty() {
                    self.cookie.extend_from_slice(b"; ");
                }
                self.cookie.extend_from_slice(value);
                return Ok(());
            }
            b"host" => self.hosts += 1,
            b"content-length" => {
                self.lengths += 1;
                self.length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            b"content-type" => self.grpc |= value.starts_with(b"application/grpc"),
            _ => {}
        }
        let (n, v) = (self.push(name), self.push(value));
        // The first one decides, as on the other paths.
        if name == b"x-request-id" && self.request_id.is_none() {
            self.request_id = Some(v.clone()).filter(|_| headers::sane_request_id(value));
        }
        if name == b"traceparent" && self.traceparent.is_none() {
            self.traceparent = Some(v.clone()).filter(|_| headers::propagated_traceparent(value));
        }
        self.fields.push((n, v));
        Ok(())
    }

    fn pseudo(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        const TWICE: &str = "a pseudo-header field repeated";
        match name {
            b"method" if self.method.is_none() => {
                self.method = Some(Method::from_bytes(value).map_err(|_| "an invalid :method")?);
            }
            b"scheme" if self.scheme.is_none() => {
                Scheme::try_from(value).map_err(|_| "an invalid :scheme")?;
                self.scheme = Some(self.push(value));
            }
            b"authority" if self.authority.is_none() => {
                let a = Authority::try_from(value).map_err(|_| "an invalid :authority")?;
                // RFC 9113 §8.3.1: no userinfo in :authority.
                if a.as_str().contains('@') {
                    return Err("userinfo in :authority");
                }
                self.authority = Some(self.push(value));
            }
            b"path" if self.path.is_none() => {
                if value.is_empty() {
                    return Err("an empty :path");
                }
                PathAndQuery::try_from(value).map_err(|_| "an invalid :path")?;
                self.path = Some(self.push(value));
            }
            b"method" | b"scheme" | b"authority" | b"path" => return Err(TWICE),
            _ => return Err("an unknown pseudo-header field"),
        }
        Ok(())
    }

    /// Checks the head is complete and joins the cookie crumbs; the error
    /// says why it is malformed.
    pub(crate) fn seal(&mut self) -> Result<(), &'static str> {
        if let Some(why) = self.malformed {
            return Err(why);
        }
        if !self.cookie.is_empty() {
            let cookie = std::mem::take(&mut self.cookie);
            let (n, v) = (self.push(b"cookie"), self.push(&cookie));
            self.fields.push((n, v));
            self.cookie = cookie;
        }
        let method = self.method.as_ref().ok_or("no :method")?;
        if *method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(":scheme or :path in a CONNECT request");
            }
            if self.authority.is_none() {
                return Err("no :authority in a CONNECT request");
            }
            return Ok(());
        }
        if let (Some(a), Some(host)) = (&self.authority, Fields::first(self, "host"))
            && !self.bytes(a).eq_ignore_ascii_case(host)
        {
            // RFC 9113 §8.3.1: routed by one, forwarded with the other.
            return Err("a Host that differs from :authority");
        }
        self.scheme.as_ref().ok_or("no :scheme")?;
        let path = self.bytes(self.path.as_ref().ok_or("no :path")?);
        let asterisk = path == b"*" && *method == Method::OPTIONS;
        if !(path.starts_with(b"/") || asterisk) {
            return Err("a :path that is neither absolute nor * for OPTIONS");
        }
        Ok(())
    }

    pub(crate) fn method(&self) -> &Method {
        self.method.as_ref().expect("sealed")
    }

    /// Whether the own HTTP/1.1 upstream path can take this request as it
    /// is: one host at most, one length at most, not gRPC, not CONNECT.
    pub(crate) fn plain(&self) -> bool {
        self.hosts <= 1 && self.lengths <= 1 && !self.grpc && self.path.is_some()
    }

    /// The host the request is for, as routing wants it.
    pub(crate) fn host_name(&self) -> String {
        let (host, _) = ClientHead::host(self);
        crate::h1_serve::host_name(host)
    }

    /// The path and query, for the access log.
    pub(crate) fn path_and_query(&self) -> Option<PathAndQuery> {
        PathAndQuery::try_from(self.bytes(self.path.as_ref()?)).ok()
    }

    /// The path without the query, for routing.
    pub(crate) fn path(&self) -> &str {
        let target = ClientHead::target(self);
        target.split_once('?').map_or(target, |(p, _)| p)
    }

    /// The head as the general path takes it.
    pub(crate) fn head(&self) -> Result<Head, &'static str> {
        let headers = self.map()?;
        let method = self.method().clone();
        let uri = if method == Method::CONNECT {
            // Authority form; the gateway refuses it with a 400 later.
            let a = self.authority.as_ref().expect("sealed");
            Uri::from(Authority::try_from(self.bytes(a)).map_err(|_| "an invalid :authority")?)
        } else {
            let mut parts = http::uri::Parts::default();
            if let Some(a) = &self.authority {
                let scheme = self.bytes(self.scheme.as_ref().expect("sealed"));
                parts.scheme = Some(Scheme::try_from(scheme).map_err(|_| "an invalid :scheme")?);
                parts.authority =
                    Some(Authority::try_from(self.bytes(a)).map_err(|_| "an invalid :authority")?);
            }
            parts.path_and_query = self.path_and_query();
            Uri::from_parts(parts).map_err(|_| "an invalid request target")?
        };
        Ok(Head {
            method,
            uri,
            headers,
        })
    }

    /// The trailer fields, or why they are malformed.
    pub(crate) fn trailer_map(&self) -> Result<HeaderMap, &'static str> {
        match self.malformed {
            Some(why) => Err(why),
            None => self.map(),
        }
    }

    /// The regular fields as a `HeaderMap`.
    fn map(&self) -> Result<HeaderMap, &'static str> {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for (n, v) in &self.fields {
            let name =
                HeaderName::from_bytes(self.bytes(n)).map_err(|_| "an invalid field name")?;
            let value =
                HeaderValue::from_bytes(self.bytes(v)).map_err(|_| "an invalid field value")?;
            map.append(name, value);
        }
        Ok(map)
    }
}

/// A byte allowed in an HTTP/2 field name: a token character, not uppercase.
fn is_name_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

impl ClientHead for Collect {
    fn method(&self) -> &Method {
        Collect::method(self)
    }

    fn target(&self) -> &str {
        // PathAndQuery admitted it: visible ASCII.
        self.path
            .as_ref()
            .and_then(|p| std::str::from_utf8(self.bytes(p)).ok())
            .unwrap_or("/")
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (self.bytes(n), self.bytes(v)))
    }

    fn host(&self) -> (&[u8], bool) {
        match &self.authority {
            Some(a) => (self.bytes(a), self.hosts > 0),
            None => (Fields::first(self, "host").unwrap_or(b""), true),
        }
    }

    fn request_id(&self) -> Option<HeaderValue> {
        let id = self.request_id.as_ref()?;
        HeaderValue::from_bytes(self.bytes(id)).ok()
    }

    fn traceparent(&self) -> Option<HeaderValue> {
        let tp = self.traceparent.as_ref()?;
        HeaderValue::from_bytes(self.bytes(tp)).ok()
    }

    fn has_content_length(&self) -> bool {
        self.lengths > 0
    }
}

impl Fields for Collect {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.fields
            .iter()
            .filter(move |(n, _)| self.bytes(n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.bytes(v))
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
        c.seal()?;
        c.head()
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
        assert!(
            with(("host", "other.test")).is_some(),
            "Host names another authority"
        );
        assert!(with(("host", "API.test:8080")).is_none());
    }

    #[test]
    fn the_own_path_takes_plain_requests() {
        let collect = |fields: &[(&str, &str)]| {
            let mut c = Collect::default();
            for (n, v) in fields {
                c.field(n.as_bytes(), v.as_bytes());
            }
            c.seal().unwrap();
            c
        };
        let mut f = GET.to_vec();
        f.push(("content-length", "12"));
        let c = collect(&f);
        assert_eq!(c.length, Some(12));
        assert!(c.plain());
        assert_eq!(c.host_name(), "api.test");
        assert_eq!(c.path(), "/a");
        assert_eq!(ClientHead::host(&c), (&b"api.test:8080"[..], false));
        f.push(("content-length", "12"));
        assert!(
            !collect(&f).plain(),
            "repeated length: the general path refuses it"
        );
        let mut g = GET.to_vec();
        g.push(("content-type", "application/grpc+proto"));
        assert!(!collect(&g).plain());
    }

    #[test]
    fn trailers_take_no_pseudo_fields() {
        let mut t = Collect::default();
        t.reset(true);
        t.field(b"grpc-status", b"0");
        assert_eq!(t.trailer_map().unwrap()["grpc-status"], "0");
        t.reset(true);
        t.field(b":status", b"200");
        assert!(t.trailer_map().is_err());
    }
}
