//! The whole authorize decision: an arbitrary request, with arbitrary or pre-signed-and-mutated
//! tokens, against the fixed key set; every decision is checked with `check_decision_at`.
//!
//! Two input formats: the text format of `fixture::parse_raw_request` (the seeds: real
//! Entra-shaped requests), and anything else, read as a structured request model.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use filters::invariants::fixture::{
    parse_raw_request, Encoding, EntraBase, Mutation, Name, Pair, ParamValue, RequestModel,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum FuzzMutation {
    SetByte { at: u16, byte: u8 },
    Insert { at: u16, byte: u8 },
    Truncate { at: u16 },
    FlipDecoded { segment: u8, at: u16, bit: u8 },
    Splice { segment: u8, from: u8 },
    DropSegment { segment: u8 },
    AppendSegment,
}

#[derive(Arbitrary, Debug)]
enum FuzzName {
    Vocab(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum FuzzValue {
    Vocab(u8),
    Hint {
        index: u8,
        mutations: Vec<FuzzMutation>,
    },
    Jws {
        header: String,
        payload: String,
        signature_from: u8,
    },
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum FuzzEncoding {
    Form,
    PercentAll { lower: bool },
    Raw,
}

#[derive(Arbitrary, Debug)]
struct FuzzPair {
    name: FuzzName,
    value: FuzzValue,
    encoding: FuzzEncoding,
    at: u8,
}

#[derive(Arbitrary, Debug)]
struct FuzzBase {
    app: u8,
    hint: u8,
    mutations: Vec<FuzzMutation>,
    drop: u16,
}

#[derive(Arbitrary, Debug)]
struct FuzzRequest {
    policy: u16,
    post: bool,
    content_type: u8,
    /// Index into `fixture::HEADS`: encodings, repeated fields, other methods, framings.
    head: u8,
    now: u8,
    base: Option<FuzzBase>,
    post_query: Option<Vec<FuzzPair>>,
    params: Vec<FuzzPair>,
}

impl From<FuzzMutation> for Mutation {
    fn from(m: FuzzMutation) -> Mutation {
        match m {
            FuzzMutation::SetByte { at, byte } => Mutation::SetByte { at, byte },
            FuzzMutation::Insert { at, byte } => Mutation::Insert { at, byte },
            FuzzMutation::Truncate { at } => Mutation::Truncate { at },
            FuzzMutation::FlipDecoded { segment, at, bit } => {
                Mutation::FlipDecoded { segment, at, bit }
            }
            FuzzMutation::Splice { segment, from } => Mutation::Splice { segment, from },
            FuzzMutation::DropSegment { segment } => Mutation::DropSegment { segment },
            FuzzMutation::AppendSegment => Mutation::AppendSegment,
        }
    }
}

fn mutations(list: Vec<FuzzMutation>) -> Vec<Mutation> {
    list.into_iter().map(Mutation::from).collect()
}

impl From<FuzzPair> for Pair {
    fn from(p: FuzzPair) -> Pair {
        Pair {
            name: match p.name {
                FuzzName::Vocab(i) => Name::Vocab(i),
                FuzzName::Raw(raw) => Name::Raw(raw),
            },
            value: match p.value {
                FuzzValue::Vocab(i) => ParamValue::Vocab(i),
                FuzzValue::Hint {
                    index,
                    mutations: m,
                } => ParamValue::Hint {
                    index,
                    mutations: mutations(m),
                },
                FuzzValue::Jws {
                    header,
                    payload,
                    signature_from,
                } => ParamValue::Jws {
                    header,
                    payload,
                    signature_from,
                },
                FuzzValue::Text(text) => ParamValue::Text(text),
            },
            encoding: match p.encoding {
                FuzzEncoding::Form => Encoding::Form,
                FuzzEncoding::PercentAll { lower } => Encoding::PercentAll { lower },
                FuzzEncoding::Raw => Encoding::Raw,
            },
            at: p.at,
        }
    }
}

fn pairs(list: Vec<FuzzPair>) -> Vec<Pair> {
    list.into_iter().map(Pair::from).collect()
}

impl From<FuzzRequest> for RequestModel {
    fn from(r: FuzzRequest) -> RequestModel {
        RequestModel {
            policy: r.policy,
            post: r.post,
            content_type: r.content_type,
            head: r.head,
            base: r.base.map(|b| EntraBase {
                app: b.app,
                hint: b.hint,
                mutations: mutations(b.mutations),
                drop: b.drop,
            }),
            params: pairs(r.params),
            post_query: r.post_query.map(pairs),
            now: r.now,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(request) = parse_raw_request(data) {
        request.check();
        return;
    }
    if let Ok(request) = FuzzRequest::arbitrary_take_rest(Unstructured::new(data)) {
        RequestModel::from(request).build().check();
    }
});
