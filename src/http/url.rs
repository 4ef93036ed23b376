//! The request a `--url` run makes for each instance: the URL template,
//! `--method`, `--header` and `--data`, checked before anything runs and
//! expanded per instance.
//!
//! Placeholders follow the command's rules ([`crate::template`]): `{}` and
//! `{id}` are the instance id, `{{` and `}}` literal braces, any other
//! `{word}` an error; `{path}` (a local path) makes no sense in a request
//! and is refused. In the URL a placeholder may appear only in the path and
//! the query, never in the scheme, userinfo, host, port or fragment, so no
//! tenant's directory name can send a request to another host; the origin
//! is therefore one and the same for every instance of a run.
//!
//! Wherever the id goes (path, query, header value, body) it is
//! percent-encoded as RFC 3986 has it: the unreserved characters
//! (`A-Z a-z 0-9 - . _ ~`) are kept and every other byte becomes `%XX`
//! (a space is `%20`, never `+`). So an id is always one path segment or
//! one query value, and no byte of it can end a header line or start a new
//! one. An id made only of dots is encoded whole (`%2E%2E`), so it can
//! never climb out of its segment. Literal text in the path and query that
//! a URI may not hold (a space, `"`, non-ASCII bytes, a `%` not followed by
//! two hex digits) is percent-encoded too.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use clap::ValueEnum;

use crate::display::quoted;
use crate::exit::Fatal;
use crate::template::{Piece, parse_arg};

/// `--method`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[value(rename_all = "UPPER")]
pub enum Method {
    Get,
    Head,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        }
    }

    /// Whether a request may be sent again after its connection failed
    /// before any answer (RFC 9110 §9.2.2): GET and HEAD, not POST.
    pub fn idempotent(self) -> bool {
        !matches!(self, Method::Post)
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Where every request of a run goes: one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: Scheme,
    /// The host as written (lower-cased), without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

/// A checked `--url` with its method, headers and body.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: Method,
    pub origin: Origin,
    /// `scheme://authority` exactly as given (userinfo included).
    prefix: String,
    /// The path and query: literal text already valid in a URI, and ids.
    target: Vec<Piece>,
    headers: Vec<(String, Vec<Piece>)>,
    data: Option<Vec<Piece>>,
}

/// One instance's request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The full URL (without its fragment, which is never sent).
    pub url: String,
    /// Header names and values, values already free of CR, LF and NUL.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
}

fn usage(message: String, hint: &str) -> Fatal {
    Fatal::usage(message).hint(hint)
}

const PLACES: &str =
    "a placeholder may appear only in the URL's path and query, in header values and in --data";

impl RequestTemplate {
    /// Checks `--url`, `--method`, `--header` and `--data` together.
    pub fn parse(
        url: &str,
        method: Option<Method>,
        headers: &[String],
        data: Option<&str>,
    ) -> Result<RequestTemplate, Fatal> {
        let method = match (method, data) {
            (None, Some(_)) => Method::Post,
            (None, None) => Method::Get,
            (Some(m @ (Method::Get | Method::Head)), Some(_)) => {
                return Err(usage(
                    format!("--data cannot be sent with --method {}", m.as_str()),
                    "a body goes with POST: drop --method, or use --method POST",
                ));
            }
            (Some(m), _) => m,
        };
        let (prefix, origin, rest) = split_origin(url)?;
        let (target, fragment) = match rest.find('#') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(fragment) = fragment
            && has_placeholder(fragment.as_bytes(), url)?
        {
            return Err(usage(
                format!("--url {}: a placeholder in the fragment", quoted(url)),
                "a fragment is never sent to the server; put the id in the path or the query",
            ));
        }
        let mut pieces = pieces_of(target.as_bytes(), &format!("--url {}", quoted(url)))?;
        if pieces.first().is_none_or(|p| !starts_with_slash(p)) {
            pieces.insert(0, Piece::Text(b"/".to_vec()));
        }
        let target = pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Text(text) => Piece::Text(uri_text(&text)),
                other => other,
            })
            .collect();
        let headers = headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        let data = data
            .map(|d| pieces_of(d.as_bytes(), "--data"))
            .transpose()?;
        Ok(RequestTemplate {
            method,
            origin,
            prefix,
            target,
            headers,
            data,
        })
    }

    /// The request for one instance.
    pub fn expand(&self, id: &OsStr) -> Expanded {
        let mut url = self.prefix.clone().into_bytes();
        fill(&mut url, &self.target, id);
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| {
                let mut out = Vec::new();
                fill(&mut out, value, id);
                (name.clone(), out)
            })
            .collect();
        let body = self.data.as_ref().map(|d| {
            let mut out = Vec::new();
            fill(&mut out, d, id);
            out
        });
        Expanded {
            // Only URI characters were put in: ASCII.
            url: String::from_utf8_lossy(&url).into_owned(),
            headers,
            body,
        }
    }

    /// Whether a header of this name (case-insensitive) was given.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

fn starts_with_slash(piece: &Piece) -> bool {
    matches!(piece, Piece::Text(t) if t.first() == Some(&b'/'))
}

/// Splits `scheme://authority` from the rest, which must hold no
/// placeholder and name a host.
fn split_origin(url: &str) -> Result<(String, Origin, &str), Fatal> {
    let shown = || format!("--url {}", quoted(url));
    let Some((scheme, after)) = url.split_once("://") else {
        return Err(usage(
            format!("{}: not an http:// or https:// URL", shown()),
            "give a full URL, such as http://127.0.0.1/{}/checkmail.php",
        ));
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ if scheme.contains(['{', '}']) => {
            return Err(usage(
                format!("{}: a placeholder in the scheme", shown()),
                PLACES,
            ));
        }
        other => {
            return Err(usage(
                format!("{}: the scheme {} is not supported", shown(), quoted(other)),
                "use http:// or https://",
            ));
        }
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains(['{', '}']) {
        return Err(usage(
            format!(
                "{}: a placeholder (or brace) in the host part {}",
                shown(),
                quoted(authority)
            ),
            "an instance's name must never choose the host a request goes to; a placeholder may appear only in the path and the query",
        ));
    }
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((host, tail)) = v6.split_once(']') else {
            return Err(usage(
                format!("{}: an unclosed [ in the host", shown()),
                "write an IPv6 address as [::1]",
            ));
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(usage(
                format!("{}: {} is not an IPv6 address", shown(), quoted(host)),
                "write an IPv6 address as [::1]",
            ));
        }
        (host.to_string(), tail.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (hostport.to_ascii_lowercase(), None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.contains(':')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    if !host_ok {
        return Err(usage(
            format!("{}: {} is not a host name", shown(), quoted(&host)),
            "give a host name or an IP address, such as 127.0.0.1",
        ));
    }
    let default_port = match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(usage(
                    format!("{}: {} is not a port", shown(), quoted(p)),
                    "a port is a number from 1 to 65535",
                ));
            }
        },
    };
    let prefix = format!("{}://{authority}", scheme_name(scheme));
    Ok((prefix, Origin { scheme, host, port }, rest))
}

fn scheme_name(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

/// Parses placeholders, refusing unknown ones and `{path}`.
fn pieces_of(text: &[u8], place: &str) -> Result<Vec<Piece>, Fatal> {
    let pieces = parse_arg(text).map_err(|word| {
        usage(
            format!(
                "unknown placeholder {{{}}} in {place}",
                String::from_utf8_lossy(&word)
            ),
            "with --url the placeholders are {} and {id}; write {{ and }} for literal braces",
        )
    })?;
    if pieces.contains(&Piece::Path) {
        return Err(usage(
            format!("{{path}} in {place}"),
            "a request cannot carry a local path; use {} or {id}, the instance id",
        ));
    }
    Ok(pieces)
}

fn has_placeholder(text: &[u8], url: &str) -> Result<bool, Fatal> {
    Ok(pieces_of(text, &format!("--url {}", quoted(url)))?
        .iter()
        .any(|p| !matches!(p, Piece::Text(_))))
}

/// `Name: value`: a token name without placeholders, a value whose literal
/// text holds no CR, LF or NUL.
fn parse_header(header: &str) -> Result<(String, Vec<Piece>), Fatal> {
    let shown = || format!("--header {}", quoted(header));
    let hint = "write a header as 'Name: value', for example 'X-Tenant: {}'";
    let Some((name, value)) = header.split_once(':') else {
        return Err(usage(format!("{}: no ':' after the name", shown()), hint));
    };
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(usage(
            format!("{}: {} is not a header name", shown(), quoted(name)),
            "a header name is letters, digits and -, without spaces or placeholders",
        ));
    }
    for framing in ["content-length", "transfer-encoding"] {
        if name.eq_ignore_ascii_case(framing) {
            return Err(usage(
                format!("{}: scatter sets {name} itself", shown()),
                "give the body with --data; its length is sent for you",
            ));
        }
    }
    let value = value.trim_start_matches([' ', '\t']);
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(usage(
            format!("{}: the value holds a line break or NUL", shown()),
            hint,
        ));
    }
    let pieces = pieces_of(value.as_bytes(), &shown())?;
    if name.eq_ignore_ascii_case("host") && pieces.contains(&Piece::Id) {
        return Err(usage(
            format!("{}: a placeholder in the Host header", shown()),
            "an instance's name must never choose the host a request goes to",
        ));
    }
    Ok((name.to_string(), pieces))
}

/// Appends the pieces with the id percent-encoded.
fn fill(out: &mut Vec<u8>, pieces: &[Piece], id: &OsStr) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.extend_from_slice(text),
            Piece::Id | Piece::Path => encode_id(out, id.as_bytes()),
        }
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// RFC 3986 percent-encoding of an id: unreserved bytes kept, every other
/// byte `%XX`; an id of dots only (`.`, `..`) is encoded whole.
pub fn encode_id(out: &mut Vec<u8>, id: &[u8]) {
    let dots = !id.is_empty() && id.iter().all(|b| *b == b'.');
    for &b in id {
        if unreserved(b) && !dots {
            out.push(b);
        } else {
            push_escaped(out, b);
        }
    }
}

/// Literal path and query text as a URI may hold it: reserved and
/// unreserved characters and valid `%XX` escapes are kept, anything else
/// (a space, a quote, a brace, a control or non-ASCII byte) is encoded.
fn uri_text(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for (i, &b) in text.iter().enumerate() {
        let escape = b == b'%'
            && text.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if escape || unreserved(b) || b"!$&'()*+,;=:@/?".contains(&b) {
            out.push(b);
        } else {
            push_escaped(&mut out, b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<RequestTemplate, Fatal> {
        RequestTemplate::parse(url, None, &[], None)
    }

    fn url_for(url: &str, id: &[u8]) -> String {
        parse(url).unwrap().expand(OsStr::from_bytes(id)).url
    }

    #[test]
    fn ids_are_one_percent_encoded_segment_or_value() {
        let t = "http://127.0.0.1/{}/check.php?tenant={id}&x=1";
        assert_eq!(
            url_for(t, b"acme"),
            "http://127.0.0.1/acme/check.php?tenant=acme&x=1"
        );
        assert_eq!(
            url_for(t, b"a b?c#d%e'f\ng/h&i=j+k"),
            "http://127.0.0.1/a%20b%3Fc%23d%25e%27f%0Ag%2Fh%26i%3Dj%2Bk/check.php?tenant=a%20b%3Fc%23d%25e%27f%0Ag%2Fh%26i%3Dj%2Bk&x=1"
        );
        assert_eq!(url_for(t, b"\xff\xfe").split('/').nth(3), Some("%FF%FE"));
        assert_eq!(
            url_for(t, b"a-b.c_d~e").split('/').nth(3),
            Some("a-b.c_d~e")
        );
        assert_eq!(url_for(t, b"..").split('/').nth(3), Some("%2E%2E"));
        assert_eq!(url_for(t, b"{}").split('/').nth(3), Some("%7B%7D"));
    }

    #[test]
    fn the_origin_is_fixed_and_parsed() {
        let o = |u: &str| parse(u).unwrap().origin;
        assert_eq!(
            o("http://127.0.0.1/{}"),
            Origin {
                scheme: Scheme::Http,
                host: "127.0.0.1".into(),
                port: 80
            }
        );
        assert_eq!(o("HTTPS://Example.COM:8443/x").port, 8443);
        assert_eq!(o("https://example.com/x").scheme, Scheme::Https);
        assert_eq!(o("https://example.com").port, 443);
        assert_eq!(o("http://[::1]:81/{}").host, "::1");
        assert_eq!(o("http://u:p@h:82/{}").host, "h");
        assert_eq!(url_for("http://h?q={}", b"a"), "http://h/?q=a");
        assert_eq!(url_for("http://h#top", b"a"), "http://h/");
    }

    #[test]
    fn placeholders_outside_the_path_and_query_are_refused() {
        for url in [
            "http://{}/x",
            "http://{}.example.com/x",
            "http://example.com{}/x",
            "http://example.com:{}/x",
            "http://{id}@example.com/x",
            "http://user:{}@example.com/x",
            "{}://example.com/x",
            "http{}://example.com/x",
            "http://example.com/x#{}",
            "http://example.com/x?a=b#frag{id}",
        ] {
            let err = parse(url).unwrap_err();
            assert_eq!(err.code, 2, "{url}");
            assert!(err.hint.is_some(), "{url}");
        }
        let err = parse("http://{}/x").unwrap_err();
        assert!(err.message.contains("host"), "{}", err.message);
    }

    #[test]
    fn bad_urls_are_refused_with_a_hint() {
        for url in [
            "127.0.0.1/{}",
            "ftp://h/{}",
            "http:///x",
            "http://h:0/",
            "http://h:99999/",
            "http://h:+80/",
            "http://[::1/",
            "http://[zz]/",
            "http://h h/",
            "http://h/{path}",
            "http://h/{nmae}",
        ] {
            let err = parse(url).unwrap_err();
            assert_eq!(err.code, 2, "{url}");
            assert!(err.hint.is_some(), "{url}");
        }
    }

    #[test]
    fn literal_text_is_made_a_valid_uri() {
        assert_eq!(
            url_for("http://h/a b/{{x}}/%41/%zz/é?q=1", b"i"),
            "http://h/a%20b/%7Bx%7D/%41/%25zz/%C3%A9?q=1"
        );
    }

    #[test]
    fn headers_and_data_carry_encoded_ids_and_nothing_that_ends_a_line() {
        let t = RequestTemplate::parse(
            "http://h/",
            None,
            &["X-Tenant: {}".into(), "Accept:text/plain".into()],
            Some("tenant={}&x=a b"),
        )
        .unwrap();
        assert_eq!(t.method, Method::Post);
        let e = t.expand(OsStr::from_bytes(b"a b\r\nEvil: 1"));
        assert_eq!(
            e.headers,
            [
                ("X-Tenant".to_string(), b"a%20b%0D%0AEvil%3A%201".to_vec()),
                ("Accept".to_string(), b"text/plain".to_vec())
            ]
        );
        assert_eq!(
            e.body.as_deref(),
            Some(&b"tenant=a%20b%0D%0AEvil%3A%201&x=a b"[..])
        );
        assert!(t.has_header("accept"));
    }

    #[test]
    fn bad_headers_and_data_are_refused() {
        for h in [
            "NoColon",
            ": empty",
            "Bad Name: x",
            "{}: x",
            "X: a\r\nY: b",
            "X: {path}",
            "Host: {}.example.com",
            "Content-Length: 5",
            "transfer-encoding: chunked",
        ] {
            let err = RequestTemplate::parse("http://h/", None, &[h.into()], None).unwrap_err();
            assert_eq!(err.code, 2, "{h}");
        }
        assert!(
            RequestTemplate::parse("http://h/", None, &["Host: example.com".into()], None).is_ok()
        );
        let err =
            RequestTemplate::parse("http://h/", Some(Method::Head), &[], Some("x")).unwrap_err();
        assert!(err.message.contains("HEAD"), "{}", err.message);
        assert!(RequestTemplate::parse("http://h/", None, &[], Some("{path}")).is_err());
    }
}
