//! Values of entries: `${ENV}` interpolation, and the shape of URLs.

/// Replaces `${NAME}` with the environment variable's value; `$$` is a literal `$`.
pub fn interpolate(s: &str) -> Result<String, String> {
    interpolate_with(s, |name| std::env::var(name).ok())
}

/// [`interpolate`] with the variables looked up by `var` (tests pass their own, so that none
/// of them changes the process environment while others run).
pub fn interpolate_with(s: &str, var: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or("unterminated ${ in value")?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value =
                var(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The scheme as typed, if it looks like one (it is quoted in messages).
pub(crate) fn safe_scheme(scheme: &str) -> &str {
    if !scheme.is_empty()
        && scheme.len() <= 16
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        scheme
    } else {
        "?"
    }
}

/// `[user[:password]@]host[:port][/path…]`: a host, a valid port, no spaces.
pub(crate) fn check_authority(rest: &str) -> Result<(), String> {
    if rest.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("invalid URL: it contains spaces or control characters".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err("invalid URL: unclosed '[' in the host".into());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err("invalid URL: unexpected text after the IPv6 host".into()),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("invalid URL: it names no host".into());
    }
    if let Some(p) = port {
        if !p.is_empty() && !matches!(p.parse::<u16>(), Ok(1..)) {
            return Err("invalid URL: the port must be a number from 1 to 65535".into());
        }
    }
    Ok(())
}
