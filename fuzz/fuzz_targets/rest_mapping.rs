//! The REST adapter's JSON path: `canonical` of a delivery decoded from bytes, and
//! `mapping::apply` of an arbitrary mapping to an arbitrary JSON object (or to that
//! canonical JSON). Neither panics; `apply` answers an object or an error.
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
    let mut u = Unstructured::new(data);
    let Ok(canonical_first) = u.arbitrary::<bool>() else {
        return;
    };
    let doc = if canonical_first {
        // A delivery off the wire (length-prefixed), then a mapping from the rest.
        let Ok(n) = u.arbitrary_len::<u8>() else {
            return;
        };
        let Ok(bytes) = u.bytes(n) else { return };
        let Ok(message) = Delivery::decode(bytes) else {
            return;
        };
        let d = OutboundDelivery {
            delivery_id: "01FUZZ".into(),
            agency: "charity".into(),
            attempt: 1,
            message,
        };
        match canonical(&d) {
            Ok((kind, json)) => {
                assert_eq!(json.get("kind"), Some(&Value::from(kind)));
                serde_json::to_string(&json).expect("canonical JSON serializes");
                json
            }
            Err(_) => return,
        }
    } else {
        let Ok(doc) = object(&mut u, 4) else { return };
        doc
    };
    let Ok(m) = mapping(&mut u) else { return };
    if let Ok(out) = apply(&m, doc) {
        assert!(out.is_object(), "apply answered a non-object: {out}");
        serde_json::to_string(&out).expect("mapped JSON serializes");
    }
});
