//! Reading records that anyone with write access to the state directory,
//! an older or newer release, or a crash could have written.
//!
//! Every field of a state record is read through one of these functions,
//! so a field of the wrong type or out of range costs that field (it reads
//! as absent), never the record or the whole file, and no number that could
//! later overflow a `Duration` or an addition ever gets in: times are finite
//! and between 1970 and the year 5000, durations finite and non-negative,
//! counts saturate instead of wrapping.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The latest time a record may name, in unix seconds (about the year 5138).
pub const MAX_TIME: f64 = 1e11;
/// The longest duration a record may name: a thousand years.
pub const MAX_SECS: f64 = 3.2e10;

/// Any type, or its default when the value is of another shape.
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = Value::deserialize(d)?;
    Ok(T::deserialize(value).unwrap_or_default())
}

/// A point in time (unix seconds), if it is a plausible one.
pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(number(Value::deserialize(d)?).filter(|t| (0.0..=MAX_TIME).contains(t)))
}

/// A point in time that must be there; 0 (the epoch) when it is not usable.
pub fn time_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(time(d)?.unwrap_or(0.0))
}

/// A length of time in seconds, if it is a plausible one.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(number(Value::deserialize(d)?).filter(|s| (0.0..=MAX_SECS).contains(s)))
}

/// A length of time that must be there; 0 when it is not usable.
pub fn secs_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(secs(d)?.unwrap_or(0.0))
}

/// An HTTP status, if it is one (100 to 999): anything else reads as
/// absent.
pub fn http_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Value::deserialize(d)?
        .as_u64()
        .filter(|s| (100..=999).contains(s))
        .and_then(|s| u16::try_from(s).ok()))
}

/// A count: negative reads as 0, too large as the type's maximum.
pub fn count<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded + Default,
{
    Ok(saturate(&Value::deserialize(d)?))
}

/// A map of counts (per outcome), each read as [`count`].
pub fn counts<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, usize>, D::Error> {
    let Value::Object(map) = Value::deserialize(d)? else {
        return Ok(BTreeMap::new());
    };
    Ok(map.into_iter().map(|(k, v)| (k, saturate(&v))).collect())
}

/// Records keyed by name, each read on its own: one that is not even an
/// object becomes the default record, and the others are unaffected. The
/// map is read one entry at a time, so only one record is ever held as a
/// loose JSON value: 10,000 records must not cost twice their size.
pub fn records<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    struct Records<T>(std::marker::PhantomData<T>);

    impl<'de, T: DeserializeOwned + Default> serde::de::Visitor<'de> for Records<T> {
        type Value = BTreeMap<String, T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("records keyed by name")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                out.insert(key, T::deserialize(value).unwrap_or_default());
            }
            Ok(out)
        }

        // Anything but a map: no records, rather than no file.
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(BTreeMap::new())
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
    }

    d.deserialize_any(Records(std::marker::PhantomData))
}

/// The most items [`items`] keeps from one list.
pub const MAX_ITEMS: usize = 10_000;

/// A list whose items are read one at a time: an item of the wrong shape is
/// dropped, the others are kept, and anything but a list reads as empty.
/// At most [`MAX_ITEMS`] are kept; the rest are read past, not held.
pub fn items<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    struct Items<T>(std::marker::PhantomData<T>);

    impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for Items<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(value) = seq.next_element::<Value>()? {
                if out.len() < MAX_ITEMS
                    && let Ok(item) = T::deserialize(value)
                {
                    out.push(item);
                }
            }
            Ok(out)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(Vec::new())
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }

    d.deserialize_any(Items(std::marker::PhantomData))
}

/// The largest amount a record may name (kibibytes of memory and the
/// like): 2^53, beyond which an `f64` no longer counts in ones.
pub const MAX_AMOUNT: f64 = 9_007_199_254_740_992.0;

/// An amount (a memory size, an average of one), if it is a plausible one:
/// finite, between 0 and [`MAX_AMOUNT`].
pub fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(number(Value::deserialize(d)?).filter(|x| (0.0..=MAX_AMOUNT).contains(x)))
}

/// A whole amount that may be absent: absent or of another shape reads as
/// `None`, negative as 0, too large as [`MAX_AMOUNT`].
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Value::deserialize(d)?;
    if let Some(n) = value.as_u64() {
        return Ok(Some(n.min(MAX_AMOUNT as u64)));
    }
    Ok(number(value).map(|x| x.clamp(0.0, MAX_AMOUNT) as u64))
}

/// A number in a text file another program writes (`/proc/loadavg`, a PSI
/// file, a file a test or an admin wrote): the whole of `text` must be a
/// plain decimal number inside `range`; anything else (`NaN`, `inf`, `1e9`
/// out of range, a sign where none belongs, trailing bytes) is `None`.
pub fn number_in(text: &str, range: std::ops::RangeInclusive<f64>) -> Option<f64> {
    // Rust's parser also takes "inf", "NaN" and exponents; a kernel file
    // never writes those, so they are refused before parsing.
    let plain = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    if !plain {
        return None;
    }
    text.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && range.contains(x))
}

/// Integer types [`count`] can saturate into.
pub trait Bounded {
    const MAX: Self;
}

impl Bounded for u32 {
    const MAX: u32 = u32::MAX;
}

impl Bounded for usize {
    const MAX: usize = usize::MAX;
}

impl Bounded for u64 {
    const MAX: u64 = u64::MAX;
}

fn saturate<T: TryFrom<u64> + Bounded + Default>(v: &Value) -> T {
    if let Some(n) = v.as_u64() {
        return T::try_from(n).unwrap_or(T::MAX);
    }
    match v.as_f64() {
        // Larger than u64 (1e300), or a fraction: saturate or truncate.
        Some(x) if x.is_finite() && x >= 1.0 => {
            if x >= u64::MAX as f64 {
                T::MAX
            } else {
                T::try_from(x as u64).unwrap_or(T::MAX)
            }
        }
        _ => T::default(),
    }
}

fn number(v: Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct R {
        #[serde(deserialize_with = "time")]
        at: Option<f64>,
        #[serde(deserialize_with = "secs")]
        took: Option<f64>,
        #[serde(deserialize_with = "count")]
        n: u32,
        #[serde(deserialize_with = "or_default")]
        name: Option<String>,
    }

    fn r(json: &str) -> R {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn out_of_range_and_mistyped_fields_read_as_absent() {
        assert_eq!(r(r#"{"at":1.5,"took":2,"n":3,"name":"x"}"#).at, Some(1.5));
        for bad in ["-1e300", "1e300", "-1", "\"NaN\"", "null", "[1]", "{}"] {
            let rec = r(&format!(
                r#"{{"at":{bad},"took":{bad},"n":{bad},"name":{bad}}}"#
            ));
            assert_eq!(rec.at, None, "{bad}");
            assert_eq!(rec.took, None, "{bad}");
            if !bad.starts_with('"') {
                assert_eq!(rec.name, None, "{bad}");
            }
        }
    }

    #[test]
    fn http_statuses_are_three_digits_or_absent() {
        #[derive(Deserialize)]
        struct H {
            #[serde(deserialize_with = "http_status")]
            s: Option<u16>,
        }
        let h = |json: &str| serde_json::from_str::<H>(json).unwrap().s;
        assert_eq!(h(r#"{"s":404}"#), Some(404));
        for bad in [
            "99", "1000", "65936", "-404", "404.5", "\"404\"", "1e300", "null",
        ] {
            assert_eq!(h(&format!(r#"{{"s":{bad}}}"#)), None, "{bad}");
        }
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        assert_eq!(r(r#"{"n":4294967295}"#).n, u32::MAX);
        assert_eq!(r(r#"{"n":18446744073709551615}"#).n, u32::MAX);
        assert_eq!(r(r#"{"n":1e308}"#).n, u32::MAX);
        assert_eq!(r(r#"{"n":-5}"#).n, 0);
        assert_eq!(r(r#"{"n":2.7}"#).n, 2);
    }

    #[test]
    fn numbers_in_text_files_are_plain_and_in_range() {
        assert_eq!(number_in("12.34", 0.0..=100.0), Some(12.34));
        assert_eq!(number_in("0", 0.0..=100.0), Some(0.0));
        assert_eq!(number_in("100.00", 0.0..=100.0), Some(100.0));
        for bad in [
            "",
            "-1",
            "100.01",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e2",
            "1e308",
            " 1",
            "1 ",
            "+1",
            "1.2.3",
            "--1",
            "0x10",
            "12%",
            "99999999999999999999999999999999999",
        ] {
            assert_eq!(number_in(bad, 0.0..=100.0), None, "{bad:?}");
        }
    }

    #[test]
    fn amounts_and_wholes_are_bounded() {
        #[derive(Debug, Default, Deserialize)]
        #[serde(default)]
        struct A {
            #[serde(deserialize_with = "amount")]
            a: Option<f64>,
            #[serde(deserialize_with = "whole")]
            w: Option<u64>,
        }
        let a: A = serde_json::from_str(r#"{"a":2.5,"w":7}"#).unwrap();
        assert_eq!((a.a, a.w), (Some(2.5), Some(7)));
        for bad in ["-1", "1e300", "\"NaN\"", "null", "[1]", "{}", "\"x\""] {
            let a: A = serde_json::from_str(&format!(r#"{{"a":{bad}}}"#)).unwrap();
            assert_eq!(a.a, None, "{bad}");
        }
        let huge: A = serde_json::from_str(r#"{"w":18446744073709551615}"#).unwrap();
        assert_eq!(huge.w, Some(MAX_AMOUNT as u64));
        let neg: A = serde_json::from_str(r#"{"w":-5}"#).unwrap();
        assert_eq!(neg.w, Some(0));
        let big: A = serde_json::from_str(r#"{"w":1e300}"#).unwrap();
        assert_eq!(big.w, Some(MAX_AMOUNT as u64));
        for absent in ["null", "\"7\"", "[7]"] {
            let a: A = serde_json::from_str(&format!(r#"{{"w":{absent}}}"#)).unwrap();
            assert_eq!(a.w, None, "{absent}");
        }
    }

    #[test]
    fn a_bad_record_costs_only_itself() {
        #[derive(Deserialize)]
        struct F {
            #[serde(deserialize_with = "records")]
            all: BTreeMap<String, R>,
        }
        let f: F = serde_json::from_str(r#"{"all":{"a":{"n":1},"b":7,"c":{"n":"x"}}}"#).unwrap();
        assert_eq!(f.all.len(), 3);
        assert_eq!(f.all["a"].n, 1);
        assert_eq!(f.all["b"], R::default());
        assert_eq!(f.all["c"].n, 0);
    }

    #[test]
    fn a_bad_item_costs_only_itself_and_lists_are_bounded() {
        #[derive(Deserialize)]
        struct L {
            #[serde(deserialize_with = "items")]
            list: Vec<u32>,
        }
        let l: L = serde_json::from_str(r#"{"list":[1,"x",{},3,-1]}"#).unwrap();
        assert_eq!(l.list, [1, 3]);
        for other in ["7", "null", "{\"a\":1}", "\"s\"", "true"] {
            let l: L = serde_json::from_str(&format!(r#"{{"list":{other}}}"#)).unwrap();
            assert!(l.list.is_empty(), "{other}");
        }
        let many = format!("{{\"list\":[{}]}}", vec!["1"; MAX_ITEMS + 5].join(","));
        let l: L = serde_json::from_str(&many).unwrap();
        assert_eq!(l.list.len(), MAX_ITEMS);
    }
}
