//! The REST adapter's JSON path. First byte odd: `canonical` of a delivery decoded from
//! bytes (two bytes of length, little-endian, then the delivery), then an arbitrary
//! mapping of that JSON from the bytes after it. Even: an arbitrary mapping of an
//! arbitrary JSON object. Neither panics; `apply` answers an object or an error.
#![no_main]

use arbitrary::Unstructured;
use jisr::adapters::rest::{canonical::canonical, mapping::apply};
use jisr::delivery::OutboundDelivery;
use jisr::pb::adapter_v1::Delivery;
use jisr_fuzz::{mapping, object};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (doc, rest) = if mode % 2 == 1 {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let (bytes, rest) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
        let Ok(message) = Delivery::decode(bytes) else {
            return;
        };
        let d = OutboundDelivery {
            delivery_id: "01FUZZ".into(),
            agency: "charity".into(),
            attempt: 1,
            message,
        };
        let Ok((kind, json)) = canonical(&d) else {
            return;
        };
        assert_eq!(json.get("kind"), Some(&Value::from(kind)));
        serde_json::to_string(&json).expect("canonical JSON serializes");
        (json, rest)
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(doc) = object(&mut u, 4) else { return };
        let used = rest.len() - u.len();
        (doc, &rest[used..])
    };
    let Ok(m) = mapping(&mut Unstructured::new(rest)) else {
        return;
    };
    if let Ok(out) = apply(&m, doc) {
        assert!(out.is_object(), "apply answered a non-object: {out}");
        serde_json::to_string(&out).expect("mapped JSON serializes");
    }
});
