//! The treap's read-only queries: look-ups, ranks, prefix summaries, pruned searches and
//! walks, and in-order iteration.

use super::{Measured, Pending, Summary, Treap, Walk, NIL};

impl<K: Ord + Copy, V: Measured + Copy> Treap<K, V> {
    /// The value stored under `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            t = match key.cmp(&n.key) {
                std::cmp::Ordering::Less => n.left,
                std::cmp::Ordering::Greater => n.right,
                std::cmp::Ordering::Equal => return Some(&n.value),
            };
        }
        None
    }

    /// Number of entries whose key is less than `key`.
    pub fn rank(&self, key: &K) -> usize {
        let mut t = self.root;
        let mut below = 0usize;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if n.key < *key {
                below += n.left_size as usize + 1;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        below
    }

    /// The entry of rank `i` (0-based) in key order.
    pub fn nth(&self, mut i: usize) -> Option<(&K, &V)> {
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let left = n.left_size as usize;
            if i < left {
                t = n.left;
            } else if i == left {
                return Some((&n.key, &n.value));
            } else {
                i -= left + 1;
                t = n.right;
            }
        }
        None
    }

    /// Summary of the first `count` entries in key order (all of them if there are fewer).
    pub fn fold_first(&self, mut count: usize) -> V::Summary {
        let mut acc = V::Summary::EMPTY;
        let mut t = self.root;
        while t != NIL && count > 0 {
            let n = &self.nodes[t as usize];
            let left = n.left_size as usize;
            if count <= left {
                t = n.left;
            } else {
                acc = acc.join(&n.left_sum).join(&n.value.measure());
                count -= left + 1;
                t = n.right;
            }
        }
        acc
    }

    /// Length and summary of the longest prefix (in key order) whose keys all satisfy `pred`,
    /// which must hold for a prefix of the keys and fail for the rest.
    pub fn fold_while(&self, mut pred: impl FnMut(&K) -> bool) -> (usize, V::Summary) {
        let mut acc = V::Summary::EMPTY;
        let mut count = 0usize;
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            if pred(&n.key) {
                acc = acc.join(&n.left_sum).join(&n.value.measure());
                count += n.left_size as usize + 1;
                t = n.right;
            } else {
                t = n.left;
            }
        }
        (count, acc)
    }

    /// The smallest `count` in `0..=len` such that `pred` holds for the summary of the first
    /// `count` entries, or `None` if it holds for none. `pred` must be monotone: once true for
    /// a prefix, true for every longer one.
    pub fn first_prefix(&self, mut pred: impl FnMut(&V::Summary) -> bool) -> Option<usize> {
        let mut acc = V::Summary::EMPTY;
        if pred(&acc) {
            return Some(0);
        }
        if !pred(&self.summary()) {
            return None;
        }
        // Invariant: pred(acc) is false, pred(acc + everything under t) is true.
        let mut before = 0usize;
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let with_left = acc.join(&n.left_sum);
            if n.left != NIL && pred(&with_left) {
                t = n.left;
                continue;
            }
            let with_self = with_left.join(&n.value.measure());
            before += n.left_size as usize + 1;
            if pred(&with_self) {
                return Some(before);
            }
            acc = with_self;
            t = n.right;
        }
        // Only reachable if `pred` is not monotone.
        None
    }

    /// The first entry whose key is greater than `after` (or the first entry at all) for which
    /// `accept` holds.
    ///
    /// `may_contain` is asked about subtree summaries and must return true whenever the
    /// subtree could hold an accepted entry; subtrees it rules out are skipped whole. The cost
    /// is O(depth) plus the subtrees it fails to rule out that hold no accepted entry: with a
    /// precise test that is O(log n), with a conservative one (for example a component-wise
    /// minimum standing for several dimensions at once) it can be more.
    pub fn first_after(
        &self,
        after: Option<&K>,
        mut may_contain: impl FnMut(&V::Summary) -> bool,
        mut accept: impl FnMut(&K, &V) -> bool,
    ) -> Option<(&K, &V)> {
        if self.root == NIL || !may_contain(&self.summary()) {
            return None;
        }
        let found = self.first_after_at(self.root, after, &mut may_contain, &mut accept);
        (found != NIL).then(|| {
            let n = &self.nodes[found as usize];
            (&n.key, &n.value)
        })
    }

    /// [`Treap::first_after`] within the subtree at `t`, which `may_contain` let through.
    fn first_after_at(
        &self,
        t: u32,
        after: Option<&K>,
        may_contain: &mut impl FnMut(&V::Summary) -> bool,
        accept: &mut impl FnMut(&K, &V) -> bool,
    ) -> u32 {
        let n = &self.nodes[t as usize];
        if after.is_some_and(|a| n.key <= *a) {
            if n.right != NIL && may_contain(&n.right_sum) {
                return self.first_after_at(n.right, after, may_contain, accept);
            }
            return NIL;
        }
        if n.left != NIL && may_contain(&n.left_sum) {
            let found = self.first_after_at(n.left, after, may_contain, accept);
            if found != NIL {
                return found;
            }
        }
        if accept(&n.key, &n.value) {
            return t;
        }
        if n.right != NIL && may_contain(&n.right_sum) {
            return self.first_after_at(n.right, None, may_contain, accept);
        }
        NIL
    }

    /// A walk positioned before the first entry.
    pub fn walk(&self) -> Walk<V::Summary> {
        let mut stack = Vec::new();
        if self.root != NIL {
            // Room for a path from the root and its pending right subtrees, so that a walk
            // does not reallocate as it goes down.
            stack.reserve(128);
            stack.push(Pending::Subtree(self.root, self.summary()));
        }
        Walk {
            stack,
            generation: self.generation,
        }
    }

    /// Continues `walk` to the next entry for which `accept` holds, skipping every subtree
    /// for which `may_contain` (which must return true whenever the subtree could hold an
    /// accepted entry) returns false. Each subtree is tested when the walk reaches it, so the
    /// two predicates may depend on state that changes between calls.
    ///
    /// Over a whole walk this visits each node at most once: an entry-by-entry scan in key
    /// order costs what one pruned search does, not one descent from the root per step. The
    /// tree must not change during a walk; if it did, the walk ends (returns `None`).
    pub fn walk_next(
        &self,
        walk: &mut Walk<V::Summary>,
        mut may_contain: impl FnMut(&V::Summary) -> bool,
        mut accept: impl FnMut(&K, &V) -> bool,
    ) -> Option<(&K, &V)> {
        if walk.generation != self.generation {
            debug_assert!(false, "the tree changed during a walk");
            walk.stack.clear();
        }
        // Whatever is left is within the whole tree: if the root's summary rules it out, so
        // is everything pending (one test instead of one per pending subtree).
        if !walk.stack.is_empty() && !may_contain(&self.summary()) {
            walk.stack.clear();
        }
        while let Some(pending) = walk.stack.pop() {
            match pending {
                Pending::Node(t) => {
                    let n = &self.nodes[t as usize];
                    if accept(&n.key, &n.value) {
                        return Some((&n.key, &n.value));
                    }
                }
                Pending::Subtree(t, summary) => {
                    if !may_contain(&summary) {
                        continue;
                    }
                    let n = &self.nodes[t as usize];
                    if n.right != NIL {
                        walk.stack.push(Pending::Subtree(n.right, n.right_sum));
                    }
                    walk.stack.push(Pending::Node(t));
                    if n.left != NIL {
                        walk.stack.push(Pending::Subtree(n.left, n.left_sum));
                    }
                }
            }
        }
        None
    }

    /// Entries in key order starting at rank `rank`; O(depth) to start, O(1) amortised per
    /// entry.
    pub fn iter_from(&self, mut rank: usize) -> Iter<'_, K, V> {
        let mut stack = Vec::new();
        let mut t = self.root;
        while t != NIL {
            let n = &self.nodes[t as usize];
            let left = n.left_size as usize;
            if rank < left {
                stack.push(t);
                t = n.left;
            } else if rank == left {
                stack.push(t);
                break;
            } else {
                rank -= left + 1;
                t = n.right;
            }
        }
        Iter { tree: self, stack }
    }

    /// All entries in key order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.iter_from(0)
    }
}

/// In-order iterator; see [`Treap::iter_from`].
pub struct Iter<'a, K, V: Measured> {
    tree: &'a Treap<K, V>,
    stack: Vec<u32>,
}

impl<'a, K, V: Measured> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let t = self.stack.pop()?;
        let nodes = &self.tree.nodes;
        let mut c = nodes[t as usize].right;
        while c != NIL {
            self.stack.push(c);
            c = nodes[c as usize].left;
        }
        let n = &nodes[t as usize];
        Some((&n.key, &n.value))
    }
}
