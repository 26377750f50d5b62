//! What the contract says, read from its compiled descriptors
//! ([`crate::pb::FILE_DESCRIPTOR_SET`]): its message types, whether a field path names a
//! real field (the fuzz targets and property tests check every BadRequest violation
//! against it), and the RPCs the gateway serves.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Every message of the contract by its full name (".jisr.v1.Referral").
pub fn messages() -> &'static HashMap<String, DescriptorProto> {
    static MESSAGES: OnceLock<HashMap<String, DescriptorProto>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        fn add(out: &mut HashMap<String, DescriptorProto>, scope: &str, m: &DescriptorProto) {
            let name = format!("{scope}.{}", m.name());
            for nested in &m.nested_type {
                add(out, &name, nested);
            }
            out.insert(name, m.clone());
        }
        let set = FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let mut out = HashMap::new();
        for file in &set.file {
            let scope = format!(".{}", file.package());
            for m in &file.message_type {
                add(&mut out, &scope, m);
            }
        }
        out
    })
}

/// Whether `path` ("referral.attachments[2].document_id") names a field of `message`
/// (".jisr.v1.SubmitReferralRequest"): each segment a field (the last may be a oneof),
/// an index only on a repeated field and below `len(path up to the index)`.
pub fn names_a_field(message: &str, path: &str, len: &dyn Fn(&str) -> Option<usize>) -> bool {
    let all = messages();
    let mut current = all.get(message);
    let mut walked = String::new();
    let segments: Vec<&str> = path.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let Some(m) = current else { return false };
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => {
                match rest.strip_suffix(']').and_then(|i| i.parse::<usize>().ok()) {
                    Some(i) => (name, Some(i)),
                    None => return false,
                }
            }
            None => (*segment, None),
        };
        let last = n + 1 == segments.len();
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(name);
        let Some(field) = m.field.iter().find(|f| f.name() == name) else {
            return last && index.is_none() && m.oneof_decl.iter().any(|o| o.name() == name);
        };
        if let Some(i) = index {
            if field.label() != Label::Repeated || len(&walked).is_none_or(|l| i >= l) {
                return false;
            }
            walked.push_str(&format!("[{i}]"));
        }
        current = if field.r#type() == Type::Message {
            all.get(field.type_name())
        } else {
            None
        };
        if !last && current.is_none() {
            return false;
        }
    }
    true
}

/// Every RPC the gateway serves, `package.Service/Method`, from the contract's descriptor.
pub fn served_rpcs() -> Vec<String> {
    let Ok(set) = FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            let full = format!("{package}.{}", service.name());
            // Implemented by agency systems, not by the gateway.
            if full == "jisr.adapter.v1.AgencyEndpointService" {
                continue;
            }
            for m in &service.method {
                out.push(format!("{full}/{}", m.name()));
            }
        }
    }
    out.sort();
    out
}
