use super::*;
use proptest::prelude::*;

/// Sum, minimum and count of the values, to check a non-trivial monoid.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stats {
    sum: i64,
    min: i64,
}

impl Summary for Stats {
    const EMPTY: Self = Stats {
        sum: 0,
        min: i64::MAX,
    };
    fn join(&self, right: &Self) -> Self {
        Stats {
            sum: self.sum + right.sum,
            min: self.min.min(right.min),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Val(i64);

impl Measured for Val {
    type Summary = Stats;
    fn measure(&self) -> Stats {
        Stats {
            sum: self.0,
            min: self.0,
        }
    }
}

fn weight(k: u32) -> u64 {
    // splitmix64 finaliser: weights unrelated to key order.
    let mut z = u64::from(k).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, i64),
    Remove(u32),
    RemoveSorted(std::collections::BTreeSet<u32>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..200, 0i64..100).prop_map(|(k, v)| Op::Insert(k, v)),
        1 => (0u32..200).prop_map(Op::Remove),
        1 => proptest::collection::btree_set(0u32..200, 0..40).prop_map(Op::RemoveSorted),
    ]
}

proptest! {
    /// Every query agrees with a BTreeMap doing the same thing the slow way.
    #[test]
    fn agrees_with_a_btreemap(
        initial in proptest::collection::btree_map(0u32..200, 0i64..100, 0..60),
        ops in proptest::collection::vec(arb_op(), 0..80),
        probe in 0u32..210,
        count in 0usize..80,
        threshold in 0i64..3000,
        bound in 0i64..100,
    ) {
        let mut t: Treap<u32, Val> =
            Treap::from_sorted(initial.iter().map(|(&k, &v)| (k, Val(v), weight(k))));
        let mut m = initial.clone();
        t.check();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    t.insert(k, Val(v), weight(k));
                    m.insert(k, v);
                }
                Op::Remove(k) => {
                    prop_assert_eq!(t.remove(&k).map(|v| v.0), m.remove(&k));
                }
                Op::RemoveSorted(keys) => {
                    let keys: Vec<u32> = keys.into_iter().collect();
                    t.remove_sorted(&keys);
                    for k in &keys {
                        m.remove(k);
                    }
                }
            }
            t.check();
            prop_assert_eq!(t.len(), m.len());
        }
        let items: Vec<(u32, i64)> = m.iter().map(|(&k, &v)| (k, v)).collect();
        let got: Vec<(u32, i64)> = t.iter().map(|(k, v)| (*k, v.0)).collect();
        prop_assert_eq!(&got, &items);
        prop_assert_eq!(t.get(&probe).map(|v| v.0), m.get(&probe).copied());
        prop_assert_eq!(t.rank(&probe), m.range(..probe).count());
        prop_assert_eq!(t.nth(count).map(|(k, v)| (*k, v.0)), items.get(count).copied());
        let from: Vec<u32> = t.iter_from(count).map(|(k, _)| *k).collect();
        let expected: Vec<u32> = items.iter().skip(count).map(|(k, _)| *k).collect();
        prop_assert_eq!(from, expected);
        let prefix_sum = |n: usize| items.iter().take(n).map(|(_, v)| v).sum::<i64>();
        prop_assert_eq!(t.fold_first(count).sum, prefix_sum(count));
        let (n, s) = t.fold_while(|k| *k < probe);
        prop_assert_eq!(n, m.range(..probe).count());
        prop_assert_eq!(s.sum, m.range(..probe).map(|(_, v)| v).sum::<i64>());
        let expected = (0..=items.len()).find(|&n| prefix_sum(n) >= threshold);
        prop_assert_eq!(t.first_prefix(|s| s.sum >= threshold), expected);
        // First key after `probe` whose value is at most `bound`, pruned by the minimum.
        let found = t.first_after(Some(&probe), |s| s.min <= bound, |_, v| v.0 <= bound);
        let expected = m.range(probe + 1..).find(|(_, v)| **v <= bound);
        prop_assert_eq!(found.map(|(k, v)| (*k, v.0)), expected.map(|(k, v)| (*k, *v)));
        let found = t.first_after(None, |s| s.min <= bound, |_, v| v.0 <= bound);
        let expected = m.iter().find(|(_, v)| **v <= bound);
        prop_assert_eq!(found.map(|(k, v)| (*k, v.0)), expected.map(|(k, v)| (*k, *v)));
        // A walk whose bound shrinks as it goes: each step sees the bound of that moment.
        let mut walk = t.walk();
        let mut limit = bound;
        let mut got = Vec::new();
        while let Some((k, v)) = t.walk_next(&mut walk, |s| s.min <= limit, |_, v| v.0 <= limit) {
            got.push(*k);
            limit -= v.0 / 2 + 1;
        }
        let mut limit = bound;
        let mut expected = Vec::new();
        for (k, v) in &m {
            if *v <= limit {
                expected.push(*k);
                limit -= v / 2 + 1;
            }
        }
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn from_sorted_tolerates_disorder_and_duplicates() {
    let entries = [(5, 1), (7, 2), (3, 3), (7, 4), (9, 5)];
    let t: Treap<u32, Val> =
        Treap::from_sorted(entries.iter().map(|&(k, v)| (k, Val(v), weight(k))));
    t.check();
    let got: Vec<(u32, i64)> = t.iter().map(|(k, v)| (*k, v.0)).collect();
    assert_eq!(got, vec![(3, 3), (5, 1), (7, 4), (9, 5)]);
}

#[test]
fn stays_shallow_and_reuses_slots() {
    let mut t: Treap<u32, Val> = Treap::new();
    for k in 0..100_000u32 {
        t.insert(k, Val(1), weight(k));
    }
    let depth = t.check();
    // Expected about 2 ln n ≈ 23; 60 would mean the weights are not doing their job.
    assert!(depth < 60, "depth {depth}");
    for k in 0..50_000u32 {
        t.remove(&k);
    }
    for k in 200_000..250_000u32 {
        t.insert(k, Val(1), weight(k));
    }
    assert_eq!(t.nodes.len(), 100_000, "removed slots are reused");
    assert_eq!(t.summary().sum, 100_000);
    let built: Treap<u32, Val> =
        Treap::from_sorted((0..100_000u32).map(|k| (k, Val(1), weight(k))));
    assert!(built.check() < 60);
}
