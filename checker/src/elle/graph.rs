//! The transaction dependency graph and the search for the cycles that name anomalies.
//!
//! Strongly connected components come from petgraph (`kosaraju_scc`, which is iterative, so
//! a million-transaction history cannot overflow the stack). Inside each component, every
//! anomaly is a constrained cycle (Elle, §4.2, and `elle.txn`'s cycle specs): G0 uses only
//! ww edges; G1c ww and wr with at least one wr; G-single exactly one rw; G-nonadjacent two
//! or more rw, no two adjacent; G2-item two or more rw with two adjacent. The `-process` and
//! `-realtime` variants may also use process or realtime edges and must use one.
//!
//! Each search rotates the cycle so that it starts with an edge of its rarest required kind
//! (rw for G-single, wr for G1c, the process or realtime edge for a variant), then runs a
//! breadth-first search over (transaction, automaton state) pairs from that edge's head back
//! to its tail, which yields a shortest such cycle through the edge. Only edges inside one
//! strongly connected component of the allowed edge kinds can lie on such a cycle, which
//! prunes most candidates.

use super::anomaly::{Collector, Why};
use super::consistency::Consistency;
use super::txn::{Status, Txns};
use super::EdgeKind;
use crate::history::Process;
use crate::ops::Operations;
use hashbrown::HashMap;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Every dependency edge, by transaction index (into [`Txns::txns`]), in flat columns.
///
/// Invariant: the four columns have the same length, and no edge is a self-loop.
#[derive(Debug, Default)]
pub(crate) struct Edges {
    pub n_txns: usize,
    pub from: Vec<u32>,
    pub to: Vec<u32>,
    pub kind: Vec<EdgeKind>,
    pub why: Vec<Why>,
}

impl Edges {
    pub fn new(n_txns: usize) -> Edges {
        Edges {
            n_txns,
            ..Edges::default()
        }
    }

    /// Adds `from -> to`; a transaction never depends on itself, so self-loops are dropped.
    pub fn push(&mut self, from: u32, to: u32, kind: EdgeKind, why: Why) {
        if from != to {
            self.from.push(from);
            self.to.push(to);
            self.kind.push(kind);
            self.why.push(why);
        }
    }

    pub fn len(&self) -> usize {
        self.from.len()
    }
}

/// True for a transaction that may have committed, so belongs in the graph.
fn in_graph(status: Status) -> bool {
    status != Status::Fail
}

/// Adds an edge from each transaction of a process to its next one.
pub(crate) fn add_process_edges(history: &Operations, txns: &Txns, edges: &mut Edges) {
    let mut last: std::collections::HashMap<&Process, u32> = std::collections::HashMap::new();
    for (index, txn) in txns.txns.iter().enumerate() {
        if !in_graph(txn.status) {
            continue;
        }
        let process = &history.ops[txn.op as usize].process;
        if let Some(previous) = last.insert(process, index as u32) {
            edges.push(previous, index as u32, EdgeKind::Process, Why::NONE);
        }
    }
}

/// Adds realtime edges: T1 -> T2 when T1 completed `ok` before T2 was invoked, transitively
/// reduced. A transaction of unknown outcome completes at infinity, so it precedes nothing.
pub(crate) fn add_realtime_edges(history: &Operations, txns: &Txns, edges: &mut Edges) {
    // Events as (history index, is completion, txn), in real-time order.
    let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(txns.txns.len() * 2);
    for (index, txn) in txns.txns.iter().enumerate() {
        if !in_graph(txn.status) {
            continue;
        }
        let op = &history.ops[txn.op as usize];
        events.push((op.invoke_index, false, index as u32));
        if txn.status == Status::Ok {
            if let Some(complete) = op.complete_index {
                events.push((complete, true, index as u32));
            }
        }
    }
    events.sort_unstable();
    // Completed txns that no other completed txn is known to follow.
    let mut frontier: Vec<u32> = Vec::new();
    for (_, is_completion, txn) in events {
        if is_completion {
            let invoked = history.ops[txns.txns[txn as usize].op as usize].invoke_index;
            // Whatever completed before this txn was invoked precedes it; it now stands for them.
            frontier.retain(|&earlier| {
                let op = &history.ops[txns.txns[earlier as usize].op as usize];
                op.complete_index.is_some_and(|done| done > invoked)
            });
            frontier.push(txn);
        } else {
            for &earlier in &frontier {
                edges.push(earlier, txn, EdgeKind::Realtime, Why::NONE);
            }
        }
    }
}

/// The data-dependency shape of a cycle anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    G0,
    G1c,
    GSingle,
    GNonadjacent,
    G2Item,
}

impl Shape {
    const ALL: [Shape; 5] = [
        Shape::G0,
        Shape::G1c,
        Shape::GSingle,
        Shape::GNonadjacent,
        Shape::G2Item,
    ];

    fn name(self) -> &'static str {
        match self {
            Shape::G0 => "G0",
            Shape::G1c => "G1c",
            Shape::GSingle => "G-single",
            Shape::GNonadjacent => "G-nonadjacent",
            Shape::G2Item => "G2-item",
        }
    }
}

/// Edge labels as bits.
const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const PROCESS: u8 = 8;
const REALTIME: u8 = 16;

fn label(kind: EdgeKind) -> u8 {
    match kind {
        EdgeKind::Ww => WW,
        EdgeKind::Wr => WR,
        EdgeKind::Rw => RW,
        EdgeKind::Process => PROCESS,
        EdgeKind::Realtime => REALTIME,
    }
}

/// Automaton state bits: rw edges seen (0, 1, 2 = two or more), last edge rw, two adjacent
/// rw edges seen, a wr edge seen.
const COUNT_MASK: u8 = 3;
const LAST_RW: u8 = 4;
const ADJACENT: u8 = 8;
const SEEN_WR: u8 = 16;

/// One cycle anomaly to search for: a shape, and optionally a process or realtime variant.
#[derive(Clone, Copy, Debug)]
struct Spec {
    shape: Shape,
    /// `PROCESS` or `REALTIME` for a variant, 0 for the plain anomaly.
    variant: u8,
}

impl Spec {
    fn name(self) -> String {
        match self.variant {
            PROCESS => format!("{}-process", self.shape.name()),
            REALTIME => format!("{}-realtime", self.shape.name()),
            _ => self.shape.name().to_string(),
        }
    }

    fn allowed(self) -> u8 {
        let data = match self.shape {
            Shape::G0 => WW,
            Shape::G1c => WW | WR,
            _ => WW | WR | RW,
        };
        data | self.variant
    }

    /// The label of the edge every cycle is rotated to start with.
    fn first(self) -> u8 {
        match (self.variant, self.shape) {
            (0, Shape::G0) => WW,
            (0, Shape::G1c) => WR,
            (0, _) => RW,
            (variant, _) => variant,
        }
    }

    /// The state after following an edge labelled `label`, or `None` if the cycle may not.
    fn step(self, state: u8, label: u8) -> Option<u8> {
        if self.allowed() & label == 0 {
            return None;
        }
        let is_rw = label == RW;
        let count = (state & COUNT_MASK) + u8::from(is_rw);
        let mut next = count.min(2);
        if is_rw {
            next |= LAST_RW;
        }
        if (is_rw && state & LAST_RW != 0) || state & ADJACENT != 0 {
            next |= ADJACENT;
        }
        if label == WR || state & SEEN_WR != 0 {
            next |= SEEN_WR;
        }
        match self.shape {
            Shape::GSingle if count > 1 => return None,
            Shape::GNonadjacent if next & ADJACENT != 0 => return None,
            _ => {}
        }
        // Forget what this shape does not need, to keep the searched state space small.
        let keep = match self.shape {
            Shape::G0 => 0,
            Shape::G1c => SEEN_WR,
            Shape::GSingle => COUNT_MASK,
            Shape::GNonadjacent => COUNT_MASK | LAST_RW,
            Shape::G2Item => COUNT_MASK | LAST_RW | ADJACENT,
        };
        Some(next & keep)
    }

    /// True when a cycle that ends in `state` (and starts with `self.first()`) has the shape.
    fn accepts(self, state: u8) -> bool {
        let count = state & COUNT_MASK;
        // The cycle closes: its last edge is adjacent to its first.
        let wraps_rw = state & LAST_RW != 0 && self.first() == RW;
        match self.shape {
            Shape::G0 => true,
            Shape::G1c => state & SEEN_WR != 0,
            Shape::GSingle => count == 1,
            Shape::GNonadjacent => count >= 2 && !wraps_rw,
            Shape::G2Item => count >= 2 && (state & ADJACENT != 0 || wraps_rw),
        }
    }
}

/// The search for cycle anomalies, with its budgets.
pub(crate) struct CycleSearch {
    pub consistency: Consistency,
    pub process: bool,
    pub realtime: bool,
    pub budget_per_component: Duration,
    pub deadline: Option<Instant>,
}

/// A search stopped because its deadline passed.
struct OutOfTime;

impl CycleSearch {
    /// Searches every strongly connected component of `edges`. Returns why the search of an
    /// anomaly the consistency model forbids was cut short, if it was.
    pub fn run(&self, edges: &Edges, collector: &mut Collector) -> Option<String> {
        let components = strongly_connected_components(edges);
        if components.is_empty() {
            return None;
        }
        let specs = self.specs();
        let adjacency = Adjacency::new(edges);
        let mut local_of = vec![u32::MAX; edges.n_txns];
        let mut incomplete: Option<String> = None;
        for component in &components {
            let started = Instant::now();
            let mut deadline = started + self.budget_per_component;
            if let Some(overall) = self.deadline {
                deadline = deadline.min(overall);
            }
            for (local, &txn) in component.iter().enumerate() {
                local_of[txn as usize] = local as u32;
            }
            let graph = LocalGraph::new(component, &local_of, &adjacency, edges);
            for (position, &spec) in specs.iter().enumerate() {
                let name = spec.name();
                if !collector.wants(&name) {
                    continue;
                }
                match graph.find(spec, deadline) {
                    Ok(Some(cycle)) => {
                        let steps: Vec<_> = cycle
                            .iter()
                            .map(|&e| {
                                let e = e as usize;
                                (edges.from[e], edges.to[e], edges.kind[e], edges.why[e])
                            })
                            .collect();
                        collector.add_cycle(&name, &steps);
                    }
                    Ok(None) => {}
                    Err(OutOfTime) => {
                        let overall = self.deadline.is_some_and(|d| Instant::now() >= d);
                        let forbidden: Vec<String> = specs[position..]
                            .iter()
                            .map(|s| s.name())
                            .filter(|n| self.consistency.forbids(n))
                            .collect();
                        if !forbidden.is_empty() && incomplete.is_none() {
                            let what = if overall {
                                "the check's timeout".to_string()
                            } else {
                                format!(
                                    "the cycle search's budget of {} ms for one component",
                                    self.budget_per_component.as_millis()
                                )
                            };
                            incomplete = Some(format!(
                                "{what} ran out in a component of {} transactions before \
                                 the search for {} finished",
                                component.len(),
                                forbidden.join(", ")
                            ));
                        }
                        if overall {
                            return incomplete;
                        }
                        break;
                    }
                }
            }
            for &txn in component {
                local_of[txn as usize] = u32::MAX;
            }
        }
        incomplete
    }

    /// The anomalies to search for: those the model forbids first, so that a budget that
    /// runs out is spent on what decides the verdict.
    fn specs(&self) -> Vec<Spec> {
        let mut variants = vec![0];
        if self.process {
            variants.push(PROCESS);
        }
        if self.realtime {
            variants.push(REALTIME);
        }
        let mut specs: Vec<Spec> = variants
            .iter()
            .flat_map(|&variant| Shape::ALL.map(|shape| Spec { shape, variant }))
            .collect();
        specs.sort_by_key(|spec| !self.consistency.forbids(&spec.name()));
        specs
    }
}

/// The components of more than one transaction, each sorted, in a stable order.
fn strongly_connected_components(edges: &Edges) -> Vec<Vec<u32>> {
    let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(edges.n_txns, edges.len());
    for _ in 0..edges.n_txns {
        graph.add_node(());
    }
    for (&from, &to) in edges.from.iter().zip(&edges.to) {
        graph.add_edge(
            NodeIndex::new(from as usize),
            NodeIndex::new(to as usize),
            (),
        );
    }
    let mut components: Vec<Vec<u32>> = kosaraju_scc(&graph)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut txns: Vec<u32> = component.iter().map(|n| n.index() as u32).collect();
            txns.sort_unstable();
            txns
        })
        .collect();
    components.sort_unstable();
    components
}

/// Outgoing edge indices of every transaction (compressed sparse rows).
struct Adjacency {
    offsets: Vec<u32>,
    edges: Vec<u32>,
}

impl Adjacency {
    fn new(edges: &Edges) -> Adjacency {
        let mut offsets = vec![0u32; edges.n_txns + 1];
        for &from in &edges.from {
            offsets[from as usize + 1] += 1;
        }
        for i in 0..edges.n_txns {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut sorted = vec![0u32; edges.len()];
        for (index, &from) in edges.from.iter().enumerate() {
            sorted[fill[from as usize] as usize] = index as u32;
            fill[from as usize] += 1;
        }
        Adjacency {
            offsets,
            edges: sorted,
        }
    }

    fn out(&self, txn: u32) -> &[u32] {
        &self.edges[self.offsets[txn as usize] as usize..self.offsets[txn as usize + 1] as usize]
    }
}

/// One component with local vertex ids 0..n: for each edge, (from, to, label, global index).
struct LocalGraph {
    n: usize,
    edges: Vec<(u32, u32, u8, u32)>,
    offsets: Vec<u32>,
}

impl LocalGraph {
    fn new(component: &[u32], local_of: &[u32], adjacency: &Adjacency, all: &Edges) -> LocalGraph {
        let mut edges = Vec::new();
        let mut offsets = Vec::with_capacity(component.len() + 1);
        for (local, &txn) in component.iter().enumerate() {
            offsets.push(edges.len() as u32);
            for &e in adjacency.out(txn) {
                let to = local_of[all.to[e as usize] as usize];
                if to != u32::MAX {
                    edges.push((local as u32, to, label(all.kind[e as usize]), e));
                }
            }
        }
        offsets.push(edges.len() as u32);
        LocalGraph {
            n: component.len(),
            edges,
            offsets,
        }
    }

    fn out(&self, v: u32) -> &[(u32, u32, u8, u32)] {
        &self.edges[self.offsets[v as usize] as usize..self.offsets[v as usize + 1] as usize]
    }

    /// Finds one simple cycle of `spec`'s shape, as global edge indices in cycle order.
    fn find(&self, spec: Spec, deadline: Instant) -> Result<Option<Vec<u32>>, OutOfTime> {
        let allowed = spec.allowed();
        let first = spec.first();
        if !self.edges.iter().any(|e| e.2 == first) {
            return Ok(None);
        }
        let component = self.sub_components(allowed);
        let mut search = Bfs::default();
        for &(a, b, edge_label, global) in &self.edges {
            if edge_label != first || component[a as usize] != component[b as usize] {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(OutOfTime);
            }
            let Some(start) = spec.step(0, first) else {
                continue;
            };
            if let Some(mut path) = search.run(self, spec, &component, a, b, start, deadline)? {
                path.insert(0, global);
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Component ids of the subgraph of edges whose label is in `allowed`.
    fn sub_components(&self, allowed: u8) -> Vec<u32> {
        let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(self.n, self.edges.len());
        for _ in 0..self.n {
            graph.add_node(());
        }
        for &(a, b, edge_label, _) in &self.edges {
            if edge_label & allowed != 0 {
                graph.add_edge(NodeIndex::new(a as usize), NodeIndex::new(b as usize), ());
            }
        }
        let mut component = vec![0u32; self.n];
        for (id, members) in kosaraju_scc(&graph).into_iter().enumerate() {
            for node in members {
                component[node.index()] = id as u32;
            }
        }
        component
    }
}

/// A breadth-first search over (vertex, automaton state), reused across candidates.
#[derive(Default)]
struct Bfs {
    /// (vertex, state) -> (previous (vertex, state), local edge position).
    parent: HashMap<u64, (u64, u32)>,
    queue: VecDeque<u64>,
}

fn pack(vertex: u32, state: u8) -> u64 {
    (u64::from(vertex) << 8) | u64::from(state)
}

fn unpack(node: u64) -> (u32, u8) {
    ((node >> 8) as u32, node as u8)
}

impl Bfs {
    /// A shortest path from `b` (in state `start`) back to `a` that `spec` accepts, as global
    /// edge indices; `None` if there is none or the only ones found are not simple.
    #[allow(clippy::too_many_arguments)] // The search's inputs; bundling them adds nothing.
    fn run(
        &mut self,
        graph: &LocalGraph,
        spec: Spec,
        component: &[u32],
        a: u32,
        b: u32,
        start: u8,
        deadline: Instant,
    ) -> Result<Option<Vec<u32>>, OutOfTime> {
        self.parent.clear();
        self.queue.clear();
        let root = pack(b, start);
        self.parent.insert(root, (u64::MAX, u32::MAX));
        self.queue.push_back(root);
        let target_component = component[a as usize];
        let mut steps = 0u32;
        while let Some(node) = self.queue.pop_front() {
            steps = steps.wrapping_add(1);
            if steps & 4095 == 0 && Instant::now() >= deadline {
                return Err(OutOfTime);
            }
            let (v, state) = unpack(node);
            let first_edge = graph.offsets[v as usize];
            for (offset, &(_, w, edge_label, _)) in graph.out(v).iter().enumerate() {
                if component[w as usize] != target_component {
                    continue;
                }
                let Some(next) = spec.step(state, edge_label) else {
                    continue;
                };
                let position = first_edge + offset as u32;
                if w == a {
                    if spec.accepts(next) {
                        let path = self.path(node, position);
                        if is_simple(graph, a, &path) {
                            return Ok(Some(
                                path.iter().map(|&p| graph.edges[p as usize].3).collect(),
                            ));
                        }
                    }
                    continue;
                }
                if w == b {
                    continue;
                }
                let child = pack(w, next);
                if let hashbrown::hash_map::Entry::Vacant(slot) = self.parent.entry(child) {
                    slot.insert((node, position));
                    self.queue.push_back(child);
                }
            }
        }
        Ok(None)
    }

    /// The local edge positions from the root to `node`, then `last`.
    fn path(&self, mut node: u64, last: u32) -> Vec<u32> {
        let mut positions = vec![last];
        while let Some(&(previous, position)) = self.parent.get(&node) {
            if previous == u64::MAX {
                break;
            }
            positions.push(position);
            node = previous;
        }
        positions.reverse();
        positions
    }
}

/// True when the cycle made of an edge out of `a` and then `path` (local edge positions)
/// visits no vertex twice.
fn is_simple(graph: &LocalGraph, a: u32, path: &[u32]) -> bool {
    let mut seen = hashbrown::HashSet::with_capacity(path.len() + 1);
    seen.insert(a);
    path.iter().all(|&p| seen.insert(graph.edges[p as usize].0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape) -> Spec {
        Spec { shape, variant: 0 }
    }

    fn walk(spec: Spec, labels: &[u8]) -> bool {
        let mut state = 0;
        for &l in labels {
            match spec.step(state, l) {
                Some(next) => state = next,
                None => return false,
            }
        }
        spec.accepts(state)
    }

    #[test]
    fn automata_accept_exactly_their_shapes() {
        assert!(walk(spec(Shape::G0), &[WW, WW]));
        assert!(!walk(spec(Shape::G0), &[WW, WR]));
        assert!(walk(spec(Shape::G1c), &[WR, WW]));
        assert!(walk(spec(Shape::GSingle), &[RW, WW, WR]));
        assert!(!walk(spec(Shape::GSingle), &[RW, WW, RW]));
        assert!(walk(spec(Shape::GNonadjacent), &[RW, WW, RW, WR]));
        assert!(!walk(spec(Shape::GNonadjacent), &[RW, WW, RW]));
        assert!(walk(spec(Shape::G2Item), &[RW, WW, RW]));
        assert!(walk(spec(Shape::G2Item), &[RW, RW]));
        assert!(!walk(spec(Shape::G2Item), &[RW, WW, RW, WR]));
        let process = Spec {
            shape: Shape::G1c,
            variant: PROCESS,
        };
        assert!(walk(process, &[PROCESS, WR]));
        assert!(!walk(process, &[PROCESS, WW]));
    }
}
