//! A `Store` transaction as one etcd Txn, and its response back as a revision or a `Conflict`.
//!
//! Every op with a compare adds one etcd Compare; the success branch writes, and the failure
//! branch reads every compared key, so a failed compare comes back with what etcd found when
//! it evaluated the compares (atomically), and the `Conflict` names the first op that fails.

use super::pb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse, compare,
    request_op, response_op,
};
use crate::{Expect, Op, StoreError};

/// The etcd Txn for `ops`, whose keys live under `namespace`.
pub(crate) fn request(namespace: &str, ops: &[Op]) -> TxnRequest {
    let mut txn = TxnRequest::default();
    for op in ops {
        let key = full_key(namespace, op.key());
        let write = match op {
            Op::Put { value, .. } => request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..PutRequest::default()
            }),
            Op::Delete { .. } => request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.clone(),
                ..DeleteRangeRequest::default()
            }),
        };
        txn.success.push(RequestOp { request: Some(write) });
        if let Some(compare) = compare(op.expect(), &key) {
            txn.compare.push(compare);
            let read = RangeRequest {
                key,
                keys_only: true,
                ..RangeRequest::default()
            };
            txn.failure.push(RequestOp {
                request: Some(request_op::Request::RequestRange(read)),
            });
        }
    }
    txn
}

/// The commit's revision, or the `Conflict` of the first op whose compare failed.
pub(crate) fn outcome(ops: &[Op], response: TxnResponse) -> Result<u64, StoreError> {
    if response.succeeded {
        return Ok(header_revision(response.header.as_ref()));
    }
    let compared = ops.iter().filter(|op| op.expect() != Expect::Any);
    for (op, read) in compared.zip(&response.responses) {
        let found = match &read.response {
            Some(response_op::Response::ResponseRange(range)) => {
                range.kvs.first().map(|kv| kv.mod_revision as u64)
            }
            _ => {
                return Err(StoreError::Backend(
                    "etcd answered a failed txn without its reads".into(),
                ));
            }
        };
        if !op.expect().matches(found) {
            return Err(StoreError::Conflict {
                key: op.key().to_owned(),
                expected: op.expect(),
                found,
            });
        }
    }
    Err(StoreError::Backend(
        "etcd failed a txn compare, but every compared key reads as expected; retry".into(),
    ))
}

/// `namespace` + `key`, as etcd stores it.
pub(crate) fn full_key(namespace: &str, key: &str) -> Vec<u8> {
    let mut full = Vec::with_capacity(namespace.len() + key.len());
    full.extend_from_slice(namespace.as_bytes());
    full.extend_from_slice(key.as_bytes());
    full
}

/// The end of the range of every key starting with `prefix` (etcd's "prefix plus one"):
/// `prefix` with its last byte below 0xff incremented and what follows dropped; `\0` (no end)
/// when there is none.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(crate) fn header_revision(header: Option<&super::pb::ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.revision.max(0) as u64)
}

/// The etcd compare for `expect` on `key`; `None` for `Any`. An absent key compares as
/// create_revision = mod_revision = 0, so `Absent` is create_revision == 0.
fn compare(expect: Expect, key: &[u8]) -> Option<Compare> {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let (target, result, value) = match expect {
        Expect::Any => return None,
        Expect::Absent => (
            CompareTarget::Create,
            CompareResult::Equal,
            TargetUnion::CreateRevision(0),
        ),
        // mod_revision == 0 would hold for an absent key, and no key has revision 0 (nor one
        // beyond i64): compare what can never hold, version < 0, so the txn fails as it must.
        Expect::Revision(revision) => match i64::try_from(revision) {
            Ok(revision) if revision > 0 => (
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(revision),
            ),
            _ => (
                CompareTarget::Version,
                CompareResult::Less,
                TargetUnion::Version(0),
            ),
        },
    };
    Some(Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_vec(),
        target_union: Some(value),
        range_end: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/a/", b"/a0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, want) in cases {
            assert_eq!(prefix_end(prefix), *want, "prefix {prefix:?}");
        }
    }

    #[test]
    fn compares_only_what_is_expected() {
        let ops = vec![
            Op::Put {
                key: "/a".into(),
                value: vec![1],
                expect: Expect::Any,
            },
            Op::Delete {
                key: "/b".into(),
                expect: Expect::Absent,
            },
            Op::Put {
                key: "/c".into(),
                value: vec![],
                expect: Expect::Revision(0),
            },
        ];
        let txn = request("/ns/", &ops);
        assert_eq!(txn.success.len(), 3);
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(txn.failure.len(), 2);
        assert_eq!(txn.compare[0].key, b"/ns//b");
        assert_eq!(txn.compare[1].target, compare::CompareTarget::Version as i32);
    }
}
