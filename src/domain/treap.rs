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

#[cfg(test)]
mod tests {
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
}
