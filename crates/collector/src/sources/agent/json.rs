//! Reading what agents of every version write: bare `NaN`/`Infinity` (Mesos ≥ 1.10) and
//! `nan`/`inf` (< 1.7) are not JSON, so they are rewritten to `null` before parsing; numbers
//! come as ints or doubles in either place (`1.0` for a counter, `0` for a double).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Rewrites bare non-finite number tokens outside strings to `null`. Borrows the input when
/// there is none (the usual case).
pub fn sanitize(body: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    let n = body.len();
    while i < n {
        match body[i] {
            b'"' => {
                // Skip the string, honouring escapes.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &body[i..]) {
                        Some(off) if body[i + off] == b'\\' => {
                            i += off + 2;
                            if i >= n {
                                i = n;
                                break;
                            }
                        }
                        Some(off) => {
                            i += off + 1;
                            break;
                        }
                        None => {
                            i = n;
                            break;
                        }
                    }
                }
            }
            b'N' | b'I' | b'n' | b'i' | b'-' => match non_finite_len(&body[i..]) {
                Some(len) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(n + 16));
                    o.extend_from_slice(&body[copied..i]);
                    o.extend_from_slice(b"null");
                    i += len;
                    copied = i;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(body),
        Some(mut o) => {
            o.extend_from_slice(&body[copied.min(n)..]);
            Cow::Owned(o)
        }
    }
}

/// The length of a non-finite token at the start of `s`, if there is one.
fn non_finite_len(s: &[u8]) -> Option<usize> {
    const TOKENS: [&[u8]; 10] = [
        b"-Infinity",
        b"Infinity",
        b"-NaN",
        b"NaN",
        b"-nan",
        b"nan",
        b"-inf",
        b"inf",
        b"-Inf",
        b"Inf",
    ];
    // `null` also starts with `n`; a real token must not be followed by more letters.
    TOKENS.iter().find_map(|t| {
        let rest = s.strip_prefix(*t)?;
        match rest.first() {
            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => None,
            _ => Some(t.len()),
        }
    })
}

/// A numeric statistics field: absent, present but not a finite number (or not a number at
/// all), or a value. Any JSON number is accepted, integer or not.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Num {
    #[default]
    Missing,
    Invalid,
    Value(f64),
}

impl Num {
    pub fn get(self) -> Option<f64> {
        match self {
            Num::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
        Ok(if v.is_finite() {
            Num::Value(v)
        } else {
            Num::Invalid
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
        Ok(Num::Value(v as f64))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
        Ok(Num::Value(v as f64))
    }
    fn visit_unit<E>(self) -> Result<Num, E> {
        Ok(Num::Invalid)
    }
    fn visit_none<E>(self) -> Result<Num, E> {
        Ok(Num::Invalid)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
        Ok(Num::Invalid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Num, E> {
        Ok(Num::Invalid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Num::Invalid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Num::Invalid)
    }
}

/// An id written as a string (`/containers`, `/state`) or as `{"value": "..."}` (protobuf
/// renderings and the v1 API). Anything else reads as empty.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Id<'a>(pub Cow<'a, str>);

impl<'a> Id<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an id string or {\"value\": ...}")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Id<'de>, E> {
                Ok(Id::default())
            }
            fn visit_u64<E>(self, v: u64) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Id<'de>, A::Error> {
                let mut id = Id::default();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    if k == "value" {
                        id = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(id)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Id<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Id::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A string field that tolerates `null` and non-strings (read as empty).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'a> Str<'a> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Str<'de>, E> {
                Ok(Str::default())
            }
            fn visit_bool<E>(self, v: bool) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Str<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Str<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A list that tolerates `null` and non-lists (read as empty).
#[derive(Clone, Debug, PartialEq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(List(v))
            }
            fn visit_unit<E>(self) -> Result<List<T>, E> {
                Ok(List::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(List::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<List<T>, E> {
                Ok(List::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<List<T>, E> {
                Ok(List::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<List<T>, E> {
                Ok(List::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<List<T>, E> {
                Ok(List::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<List<T>, E> {
                Ok(List::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Labels in either rendering: a flat `[{"key", "value"?}]` (`/state`) or `{"labels": [...]}`
/// (protobuf renderings, v1 API).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels<'a>(pub Vec<(Cow<'a, str>, Cow<'a, str>)>);

#[derive(Deserialize)]
struct Label<'a> {
    #[serde(borrow, default)]
    key: Str<'a>,
    #[serde(borrow, default)]
    value: Str<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("labels")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Labels<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some(l) = seq.next_element::<Label<'de>>()? {
                    v.push((l.key.0, l.value.0));
                }
                Ok(Labels(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels<'de>, A::Error> {
                let mut out = Labels::default();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    if k == "labels" {
                        out = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
            fn visit_unit<E>(self) -> Result<Labels<'de>, E> {
                Ok(Labels::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(body: &str) -> String {
        String::from_utf8(sanitize(body.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn non_finite_tokens_outside_strings_become_null() {
        assert_eq!(
            s(r#"{"a": NaN, "b":Infinity,"c":-Infinity, "d": [nan, -inf, inf]}"#),
            r#"{"a": null, "b":null,"c":null, "d": [null, null, null]}"#
        );
    }

    #[test]
    fn strings_literals_and_numbers_are_untouched() {
        let body = r#"{"NaN": "Infinity \" NaN \\", "x": null, "y": -1.5e-3, "network_infos": [true, false], "i": "inf"}"#;
        assert!(matches!(sanitize(body.as_bytes()), Cow::Borrowed(_)));
        assert_eq!(s(body), body);
    }

    #[test]
    fn numbers_of_any_form_parse() {
        #[derive(Deserialize)]
        struct T {
            a: Num,
            b: Num,
            c: Num,
            d: Num,
            e: Num,
            #[serde(default)]
            f: Num,
        }
        let t: T = serde_json::from_slice(&sanitize(
            br#"{"a": 1, "b": 1.0, "c": 1.23456789012346e+15, "d": NaN, "e": "x"}"#,
        ))
        .unwrap();
        assert_eq!(t.a, Num::Value(1.0));
        assert_eq!(t.b, Num::Value(1.0));
        assert_eq!(t.c, Num::Value(1.23456789012346e15));
        assert_eq!(t.d, Num::Invalid);
        assert_eq!(t.e, Num::Invalid);
        assert_eq!(t.f, Num::Missing);
    }

    #[test]
    fn ids_and_labels_in_both_renderings() {
        #[derive(Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            a: Id<'a>,
            #[serde(borrow)]
            b: Id<'a>,
            #[serde(borrow)]
            l: Labels<'a>,
            #[serde(borrow)]
            m: Labels<'a>,
        }
        let t: T = serde_json::from_str(
            r#"{"a": "x\/y", "b": {"value": "v", "parent": {"value": "p"}},
                "l": [{"key": "k", "value": "v"}, {"key": "bare"}],
                "m": {"labels": [{"key": "k2", "value": "v2"}]}}"#,
        )
        .unwrap();
        assert_eq!(t.a.as_str(), "x/y");
        assert_eq!(t.b.as_str(), "v");
        assert_eq!(
            t.l.0,
            vec![("k".into(), "v".into()), ("bare".into(), "".into())]
        );
        assert_eq!(t.m.0, vec![("k2".into(), "v2".into())]);
    }
}
