//! An ordered map with order statistics and a caller-defined subtree summary: a treap kept in
//! one `Vec` (indices, not pointers), so that it clones with one copy and stays compact.
//!
//! Every node caches the size and a [`Summary`] of each of its two subtrees (a monoid: for
//! example the sum of their resources, or their component-wise minimum). Keeping them per
//! side, in the parent, means an update rewrites only the nodes on its path (never reading a
//! sibling) and a search can rule a subtree out without touching it. That gives, in time
//! proportional to the depth of the tree:
//!
//! * insert, remove and look up by key;
//! * the rank of a key and the entry of a given rank, and in-order iteration from a rank;
//! * the summary of the first `n` entries, or of the longest prefix whose keys satisfy a
//!   predicate, and the shortest prefix whose summary satisfies a monotone predicate;
//! * a pruned search for the first entry after a key that satisfies a predicate, and a
//!   resumable pruned in-order walk, skipping every subtree whose summary says it cannot hold
//!   one (how much that prunes depends on the predicate: see [`Treap::first_after`]).
//!
//! Balance: each node carries a heap weight that the caller derives from the entry (the
//! scheduler hashes the deployment id). Nothing here draws random numbers, so the shape is a
//! pure function of the set of (key, weight) pairs, whatever the order of operations. With
//! weights independent of key order the expected depth is O(log n) (about 2 ln n + O(1));
//! weights correlated with the key order would degrade it, down to a list for weights sorted
//! like the keys. Recursion follows the depth.
//!
//! Layout: [`Treap::from_sorted`] numbers the nodes in pre-order, so every subtree is one
//! contiguous range of the arena (the path to the first entry is consecutive in memory, and
//! in-order walks mostly move forward); later changes reuse freed slots wherever they are.

/// Index of "no node".
const NIL: u32 = u32::MAX;

/// A monoid over subtree contents: `EMPTY` is the identity and `join` is associative
/// (`left.join(right)` in key order).
pub trait Summary: Copy + std::fmt::Debug {
    /// The summary of no entries.
    const EMPTY: Self;
    /// The summary of the entries of `self` followed by those of `right`.
    fn join(&self, right: &Self) -> Self;
}

/// A value that contributes to its subtree's summary.
pub trait Measured {
    /// What subtrees aggregate.
    type Summary: Summary;
    /// This value's own contribution.
    fn measure(&self) -> Self::Summary;
}

#[derive(Debug, Clone, Copy)]
struct Node<K, V: Measured> {
    key: K,
    value: V,
    weight: u64,
    left: u32,
    right: u32,
    left_size: u32,
    right_size: u32,
    left_sum: V::Summary,
    right_sum: V::Summary,
}

/// The map; see the module documentation.
#[derive(Debug)]
pub struct Treap<K, V: Measured> {
    nodes: Vec<Node<K, V>>,
    /// Slots of removed nodes, reused by later inserts.
    vacant: Vec<u32>,
    root: u32,
    /// Counts changes, so that a [`Walk`] can tell the tree changed under it.
    generation: u64,
}

/// A resumable pruned in-order walk over a [`Treap`]; see [`Treap::walk_next`].
#[derive(Debug, Clone)]
pub struct Walk<S> {
    /// What is left, the next on top: subtrees not entered yet (with their summary, so that
    /// they can be ruled out without reading them) and nodes whose left subtree is done.
    stack: Vec<Pending<S>>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
enum Pending<S> {
    Subtree(u32, S),
    Node(u32),
}

impl<K: Copy, V: Measured + Copy> Clone for Treap<K, V> {
    /// A copy with the original's spare capacity, so that it grows as the original would
    /// (a derived clone would make the next insert reallocate the whole arena).
    fn clone(&self) -> Self {
        let mut nodes = Vec::with_capacity(self.nodes.capacity());
        nodes.extend_from_slice(&self.nodes);
        Treap {
            nodes,
            vacant: self.vacant.clone(),
            root: self.root,
            generation: self.generation,
        }
    }
}

impl<K: Ord + Copy, V: Measured + Copy> Default for Treap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy, V: Measured + Copy> Treap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Treap {
            nodes: Vec::new(),
            vacant: Vec::new(),
            root: NIL,
            generation: 0,
        }
    }

    /// A map of `entries`, which must be sorted by strictly increasing key, each with its heap
    /// weight; O(n) (the classic stack construction of a Cartesian tree), laid out in
    /// pre-order.
    ///
    /// Entries out of order are not lost: they are inserted one by one after the sorted run,
    /// and a key seen twice keeps its last value.
    pub fn from_sorted(entries: impl IntoIterator<Item = (K, V, u64)>) -> Self {
        let mut t = Self::new();
        let mut spine: Vec<u32> = Vec::new();
        let mut late = Vec::new();
        for (key, value, weight) in entries {
            if let Some(&last) = spine.last() {
                // The right spine ends with the largest key so far.
                if key <= t.nodes[last as usize].key {
                    late.push((key, value, weight));
                    continue;
                }
            }
            let n = t.alloc(key, value, weight);
            let mut last_popped = NIL;
            while let Some(&top) = spine.last() {
                if t.nodes[top as usize].weight >= weight {
                    break;
                }
                spine.pop();
                // Its subtree is complete: everything after it goes above it.
                t.pull_right(top);
                last_popped = top;
            }
            t.nodes[n as usize].left = last_popped;
            t.pull_left(n);
            if let Some(&top) = spine.last() {
                t.nodes[top as usize].right = n;
            }
            spine.push(n);
        }
        while let Some(top) = spine.pop() {
            t.pull_right(top);
            if spine.is_empty() {
                t.root = top;
            }
        }
        for (key, value, weight) in late {
            t.insert(key, value, weight);
        }
        t.lay_out_in_preorder();
        t.generation += 1;
        t
    }

    /// Renumbers the nodes in pre-order (a node, its left subtree, its right subtree), so
    /// that every subtree occupies one contiguous range of the arena. O(n).
    fn lay_out_in_preorder(&mut self) {
        if self.root == NIL {
            return;
        }
        let mut order = Vec::with_capacity(self.nodes.len() - self.vacant.len());
        let mut stack = vec![self.root];
        while let Some(t) = stack.pop() {
            order.push(t);
            let n = &self.nodes[t as usize];
            if n.right != NIL {
                stack.push(n.right);
            }
            if n.left != NIL {
                stack.push(n.left);
            }
        }
        let mut new_index = vec![NIL; self.nodes.len()];
        for (i, &t) in order.iter().enumerate() {
            // Fewer nodes than before, so the index fits.
            new_index[t as usize] = i as u32;
        }
        let remap = |t: u32| if t == NIL { NIL } else { new_index[t as usize] };
        let mut nodes = Vec::with_capacity(self.nodes.capacity());
        for &t in &order {
            let mut n = self.nodes[t as usize];
            n.left = remap(n.left);
            n.right = remap(n.right);
            nodes.push(n);
        }
        self.nodes = nodes;
        self.vacant.clear();
        self.root = 0;
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.size(self.root) as usize
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.root == NIL
    }

    /// Summary of every entry.
    pub fn summary(&self) -> V::Summary {
        self.sum(self.root)
    }

    /// Inserts `key` (replacing the value of an equal key) with heap `weight`.
    pub fn insert(&mut self, key: K, value: V, weight: u64) {
        self.remove(&key);
        self.insert_new(key, value, weight);
    }

    /// Inserts a key the caller knows is absent (one descent instead of two); a key already
    /// present would be stored twice.
    pub fn insert_new(&mut self, key: K, value: V, weight: u64) {
        self.generation += 1;
        let n = self.alloc(key, value, weight);
        self.root = self.insert_at(self.root, n);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.generation += 1;
        let (root, removed) = self.remove_at(self.root, key);
        if removed == NIL {
            return None;
        }
        self.root = root;
        self.vacant.push(removed);
        Some(self.nodes[removed as usize].value)
    }

    /// Removes every key of `keys` (sorted ascending; absent ones are ignored) in one
    /// traversal that visits only subtrees holding some of them: O(d log(n/d)) expected for d
    /// keys, and about O(d + log n) for a run of consecutive keys.
    pub fn remove_sorted(&mut self, keys: &[K]) {
        self.generation += 1;
        self.root = self.remove_sorted_at(self.root, keys);
    }

    fn remove_sorted_at(&mut self, t: u32, keys: &[K]) -> u32 {
        if t == NIL || keys.is_empty() {
            return t;
        }
        let (key, l, r) = {
            let n = &self.nodes[t as usize];
            (n.key, n.left, n.right)
        };
        let lo = keys.partition_point(|k| *k < key);
        let found = keys.get(lo) == Some(&key);
        let hi = if found { lo + 1 } else { lo };
        let (left_keys, right_keys) = (&keys[..lo], &keys[hi..]);
        let l = self.remove_sorted_at(l, left_keys);
        let r = self.remove_sorted_at(r, right_keys);
        if found {
            self.vacant.push(t);
            return self.merge(l, r);
        }
        self.nodes[t as usize].left = l;
        self.nodes[t as usize].right = r;
        if !left_keys.is_empty() {
            self.pull_left(t);
        }
        if !right_keys.is_empty() {
            self.pull_right(t);
        }
        t
    }

    /// Size of the subtree at `t`.
    fn size(&self, t: u32) -> u32 {
        if t == NIL {
            0
        } else {
            let n = &self.nodes[t as usize];
            n.left_size + 1 + n.right_size
        }
    }

    /// Summary of the subtree at `t`.
    fn sum(&self, t: u32) -> V::Summary {
        if t == NIL {
            V::Summary::EMPTY
        } else {
            let n = &self.nodes[t as usize];
            n.left_sum.join(&n.value.measure()).join(&n.right_sum)
        }
    }

    fn alloc(&mut self, key: K, value: V, weight: u64) -> u32 {
        let node = Node {
            key,
            value,
            weight,
            left: NIL,
            right: NIL,
            left_size: 0,
            right_size: 0,
            left_sum: V::Summary::EMPTY,
            right_sum: V::Summary::EMPTY,
        };
        match self.vacant.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                // u32::MAX is the NIL marker; 4 billion entries are far beyond any cluster.
                let i = u32::try_from(self.nodes.len()).unwrap_or(NIL - 1);
                self.nodes.push(node);
                i
            }
        }
    }

    /// Recomputes what `t` caches about its left subtree (after the left child changed).
    fn pull_left(&mut self, t: u32) {
        let l = self.nodes[t as usize].left;
        let (size, sum) = (self.size(l), self.sum(l));
        let n = &mut self.nodes[t as usize];
        n.left_size = size;
        n.left_sum = sum;
    }

    /// Recomputes what `t` caches about its right subtree (after the right child changed).
    fn pull_right(&mut self, t: u32) {
        let r = self.nodes[t as usize].right;
        let (size, sum) = (self.size(r), self.sum(r));
        let n = &mut self.nodes[t as usize];
        n.right_size = size;
        n.right_sum = sum;
    }

    /// Splits the subtree at `t` into keys `< key` and keys `>= key`.
    fn split(&mut self, t: u32, key: &K) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        if self.nodes[t as usize].key < *key {
            let (l, r) = self.split(self.nodes[t as usize].right, key);
            self.nodes[t as usize].right = l;
            self.pull_right(t);
            (t, r)
        } else {
            let (l, r) = self.split(self.nodes[t as usize].left, key);
            self.nodes[t as usize].left = r;
            self.pull_left(t);
            (l, t)
        }
    }

    /// Joins two subtrees, every key of `a` below every key of `b`.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        if a == NIL {
            return b;
        }
        if b == NIL {
            return a;
        }
        if self.nodes[a as usize].weight > self.nodes[b as usize].weight {
            let r = self.merge(self.nodes[a as usize].right, b);
            self.nodes[a as usize].right = r;
            self.pull_right(a);
            a
        } else {
            let l = self.merge(a, self.nodes[b as usize].left);
            self.nodes[b as usize].left = l;
            self.pull_left(b);
            b
        }
    }

    fn insert_at(&mut self, t: u32, n: u32) -> u32 {
        if t == NIL {
            return n;
        }
        let key = self.nodes[n as usize].key;
        if self.nodes[n as usize].weight > self.nodes[t as usize].weight {
            let (l, r) = self.split(t, &key);
            self.nodes[n as usize].left = l;
            self.nodes[n as usize].right = r;
            self.pull_left(n);
            self.pull_right(n);
            return n;
        }
        if key < self.nodes[t as usize].key {
            let l = self.insert_at(self.nodes[t as usize].left, n);
            self.nodes[t as usize].left = l;
            self.pull_left(t);
        } else {
            let r = self.insert_at(self.nodes[t as usize].right, n);
            self.nodes[t as usize].right = r;
            self.pull_right(t);
        }
        t
    }

    /// Removes `key` from the subtree at `t`: (new subtree root, removed node or NIL).
    fn remove_at(&mut self, t: u32, key: &K) -> (u32, u32) {
        if t == NIL {
            return (NIL, NIL);
        }
        let (l, r) = {
            let n = &self.nodes[t as usize];
            (n.left, n.right)
        };
        match key.cmp(&self.nodes[t as usize].key) {
            std::cmp::Ordering::Equal => (self.merge(l, r), t),
            std::cmp::Ordering::Less => {
                let (nl, removed) = self.remove_at(l, key);
                if removed != NIL {
                    self.nodes[t as usize].left = nl;
                    self.pull_left(t);
                }
                (t, removed)
            }
            std::cmp::Ordering::Greater => {
                let (nr, removed) = self.remove_at(r, key);
                if removed != NIL {
                    self.nodes[t as usize].right = nr;
                    self.pull_right(t);
                }
                (t, removed)
            }
        }
    }

    /// Checks every structural invariant (order, heap, sizes, summaries), returning the depth.
    #[cfg(test)]
    pub fn check(&self) -> usize
    where
        K: std::fmt::Debug,
        V::Summary: PartialEq,
    {
        fn walk<K: Ord + Copy + std::fmt::Debug, V: Measured + Copy>(
            t: &Treap<K, V>,
            n: u32,
            lo: Option<K>,
            hi: Option<K>,
        ) -> (u32, V::Summary, usize)
        where
            V::Summary: PartialEq,
        {
            if n == NIL {
                return (0, V::Summary::EMPTY, 0);
            }
            let node = &t.nodes[n as usize];
            assert!(lo.is_none_or(|lo| lo < node.key), "order");
            assert!(hi.is_none_or(|hi| node.key < hi), "order");
            for c in [node.left, node.right] {
                if c != NIL {
                    assert!(t.nodes[c as usize].weight <= node.weight, "heap");
                }
            }
            let (ls, lsum, ld) = walk(t, node.left, lo, Some(node.key));
            let (rs, rsum, rd) = walk(t, node.right, Some(node.key), hi);
            assert_eq!((node.left_size, node.right_size), (ls, rs), "sizes");
            assert_eq!(node.left_sum, lsum, "left summary");
            assert_eq!(node.right_sum, rsum, "right summary");
            let summary = lsum.join(&node.value.measure()).join(&rsum);
            (ls + rs + 1, summary, 1 + ld.max(rd))
        }
        walk(self, self.root, None, None).2
    }
}

mod query;

pub use query::Iter;

#[cfg(test)]
mod tests;
