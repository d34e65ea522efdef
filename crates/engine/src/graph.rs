//! The graph: nodes, static and conditional edges, subgraphs, and its validation at build time.

use crate::error::{EngineError, GraphError};
use crate::node::{Branch, Goto, Node, NodeOptions};
use crate::state::{Schema, State};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The virtual entry node.
pub const START: &str = "__start__";
/// The virtual exit node.
pub const END: &str = "__end__";

/// Default number of supersteps one run may take.
pub const DEFAULT_STEP_LIMIT: u32 = 25;

pub(crate) enum NodeKind {
    Func(Arc<dyn Node>),
    Subgraph(Arc<Graph>),
}

pub(crate) struct NodeSpec {
    pub(crate) name: Arc<str>,
    pub(crate) kind: NodeKind,
    pub(crate) options: NodeOptions,
    pub(crate) gotos: Vec<String>,
}

type BranchFn = Arc<dyn Fn(&State) -> Branch + Send + Sync>;

#[derive(Default, Clone)]
pub(crate) struct Edges {
    pub(crate) statics: Vec<String>,
    pub(crate) branches: Vec<(BranchFn, Vec<String>)>,
}

/// A task of a superstep: a node, with an optional per-item input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum TaskSpec {
    /// Run the node on the state.
    Plain(String),
    /// Run the node with an item (map-style fan-out).
    Item {
        /// Node name.
        n: String,
        /// The item.
        i: Value,
    },
}

impl TaskSpec {
    /// The node's name.
    pub fn node(&self) -> &str {
        match self {
            Self::Plain(n) | Self::Item { n, .. } => n,
        }
    }
}

/// A validated, immutable graph.
pub struct Graph {
    pub(crate) schema: Arc<Schema>,
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) edges: Vec<Edges>,
    pub(crate) start: Edges,
    pub(crate) step_limit: u32,
}

impl Graph {
    /// The state schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }
    /// The step limit.
    pub fn step_limit(&self) -> u32 {
        self.step_limit
    }
    pub(crate) fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// A JSON description of nodes and edges (for APIs and inspectors).
    pub fn describe(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let kind = match &n.kind {
                    NodeKind::Func(_) => json!("node"),
                    NodeKind::Subgraph(g) => json!({"subgraph": g.describe()}),
                };
                json!({"name": &*n.name, "kind": kind})
            })
            .collect();
        let mut edges = Vec::new();
        let mut push = |from: &str, e: &Edges| {
            for t in &e.statics {
                edges.push(json!({"from": from, "to": t}));
            }
            for (_, targets) in &e.branches {
                for t in targets {
                    edges.push(json!({"from": from, "to": t, "conditional": true}));
                }
            }
        };
        push(START, &self.start);
        for (n, e) in self.nodes.iter().zip(&self.edges) {
            push(&n.name, e);
        }
        for n in &self.nodes {
            for t in &n.gotos {
                edges.push(json!({"from": &*n.name, "to": t, "command": true}));
            }
        }
        json!({"nodes": nodes, "edges": edges, "step_limit": self.step_limit})
    }

    /// The tasks that follow START.
    pub(crate) fn entry_tasks(&self, state: &State) -> Result<Vec<TaskSpec>, EngineError> {
        let mut out = Vec::new();
        self.follow(START, &self.start, state, &mut out)?;
        Ok(out)
    }

    /// Routes after `node` ran: its command's gotos if it gave any, else its edges.
    pub(crate) fn successors(
        &self,
        node: &str,
        gotos: &[Goto],
        state: &State,
        out: &mut Vec<TaskSpec>,
    ) -> Result<(), EngineError> {
        if !gotos.is_empty() {
            for g in gotos {
                self.push_goto(node, g.clone(), out)?;
            }
            return Ok(());
        }
        let idx = self
            .by_name
            .get(node)
            .copied()
            .ok_or_else(|| EngineError::BadRoute { from: node.to_string(), to: node.to_string() })?;
        self.follow(node, &self.edges[idx], state, out)
    }

    fn follow(&self, from: &str, e: &Edges, state: &State, out: &mut Vec<TaskSpec>) -> Result<(), EngineError> {
        for t in &e.statics {
            self.push_goto(from, Goto::node(t.as_str()), out)?;
        }
        for (f, _) in &e.branches {
            for g in f(state).0 {
                self.push_goto(from, g, out)?;
            }
        }
        Ok(())
    }

    fn push_goto(&self, from: &str, g: Goto, out: &mut Vec<TaskSpec>) -> Result<(), EngineError> {
        let check = |n: &str| {
            if self.by_name.contains_key(n) {
                Ok(())
            } else {
                Err(EngineError::BadRoute { from: from.to_string(), to: n.to_string() })
            }
        };
        match g {
            Goto::End => {}
            Goto::Node(n) => {
                check(&n)?;
                // A node reached from several predecessors in one step runs once.
                if !out.iter().any(|t| matches!(t, TaskSpec::Plain(x) if *x == n)) {
                    out.push(TaskSpec::Plain(n));
                }
            }
            Goto::Send { node, item } => {
                check(&node)?;
                out.push(TaskSpec::Item { n: node, i: item });
            }
        }
        Ok(())
    }
}

/// Builds and validates a [`Graph`].
pub struct GraphBuilder {
    schema: Arc<Schema>,
    nodes: Vec<NodeSpec>,
    edges: HashMap<String, Edges>,
    step_limit: u32,
    errors: Vec<GraphError>,
}

impl GraphBuilder {
    /// A builder over a state schema.
    pub fn new(schema: Arc<Schema>) -> Self {
        Self { schema, nodes: Vec::new(), edges: HashMap::new(), step_limit: DEFAULT_STEP_LIMIT, errors: Vec::new() }
    }

    fn add(&mut self, name: &str, kind: NodeKind, options: NodeOptions) {
        if name.is_empty() || name == START || name == END || name.contains('/') {
            self.errors.push(GraphError::InvalidNodeName(name.to_string()));
            return;
        }
        if self.nodes.iter().any(|n| &*n.name == name) {
            self.errors.push(GraphError::DuplicateNode(name.to_string()));
            return;
        }
        self.nodes.push(NodeSpec { name: name.into(), kind, options, gotos: Vec::new() });
    }

    /// Adds a node.
    pub fn node(self, name: &str, node: impl Node + 'static) -> Self {
        self.node_with(name, node, NodeOptions::default())
    }

    /// Adds a node with a timeout and retry policy.
    pub fn node_with(mut self, name: &str, node: impl Node + 'static, options: NodeOptions) -> Self {
        self.add(name, NodeKind::Func(Arc::new(node)), options);
        self
    }

    /// Adds a compiled graph as a node with its own namespace (`name/inner_node` in events).
    /// It shares the parent's state fields; its writes become the node's update.
    pub fn subgraph(mut self, name: &str, graph: Graph) -> Self {
        self.add(name, NodeKind::Subgraph(Arc::new(graph)), NodeOptions::default());
        self
    }

    /// Declares where a node may route with a [`crate::Command`] (checked at build time for reachability).
    pub fn may_goto(mut self, node: &str, targets: &[&str]) -> Self {
        match self.nodes.iter_mut().find(|n| &*n.name == node) {
            Some(n) => n.gotos.extend(targets.iter().map(|t| t.to_string())),
            None => self.errors.push(GraphError::UnknownNode {
                from: node.to_string(),
                to: targets.join(","),
                unknown: node.to_string(),
            }),
        }
        self
    }

    /// Adds an edge (`START` and `END` allowed).
    pub fn edge(mut self, from: &str, to: &str) -> Self {
        self.edges.entry(from.to_string()).or_default().statics.push(to.to_string());
        self
    }

    /// Adds a conditional edge: `route` picks among `targets` (or [`Goto::Send`]s to them).
    pub fn conditional<R: Into<Branch>>(
        mut self,
        from: &str,
        route: impl Fn(&State) -> R + Send + Sync + 'static,
        targets: &[&str],
    ) -> Self {
        let f: BranchFn = Arc::new(move |s| route(s).into());
        self.edges
            .entry(from.to_string())
            .or_default()
            .branches
            .push((f, targets.iter().map(|t| t.to_string()).collect()));
        self
    }

    /// Sets the step limit of one run.
    pub fn step_limit(mut self, limit: u32) -> Self {
        self.step_limit = limit;
        self
    }

    /// Validates and freezes the graph.
    ///
    /// # Errors
    /// The first problem found: duplicate or invalid names, edges to unknown nodes, no entry,
    /// nodes unreachable from START, nodes with no way out.
    pub fn build(mut self) -> Result<Graph, GraphError> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        if self.step_limit == 0 {
            return Err(GraphError::ZeroStepLimit);
        }
        let by_name: HashMap<String, usize> =
            self.nodes.iter().enumerate().map(|(i, n)| (n.name.to_string(), i)).collect();
        let known = |n: &str| n == END || by_name.contains_key(n);
        let mut froms: Vec<&String> = self.edges.keys().collect();
        froms.sort();
        for from in froms {
            let e = &self.edges[from];
            if from != START && !by_name.contains_key(from.as_str()) {
                let to = e.statics.first().cloned().unwrap_or_default();
                return Err(GraphError::UnknownNode { from: from.clone(), to, unknown: from.clone() });
            }
            for to in e.statics.iter().chain(e.branches.iter().flat_map(|b| b.1.iter())) {
                if !known(to) {
                    return Err(GraphError::UnknownNode { from: from.clone(), to: to.clone(), unknown: to.clone() });
                }
            }
        }
        for n in &self.nodes {
            for to in &n.gotos {
                if !known(to) {
                    return Err(GraphError::UnknownNode {
                        from: n.name.to_string(),
                        to: to.clone(),
                        unknown: to.clone(),
                    });
                }
            }
        }
        let start = self.edges.remove(START).unwrap_or_default();
        if start.statics.is_empty() && start.branches.is_empty() {
            return Err(GraphError::NoEntry);
        }
        let edges: Vec<Edges> = self.nodes.iter().map(|n| self.edges.remove(&*n.name).unwrap_or_default()).collect();
        let targets = |e: &Edges| -> Vec<String> {
            e.statics.iter().chain(e.branches.iter().flat_map(|b| b.1.iter())).cloned().collect()
        };
        for (n, e) in self.nodes.iter().zip(&edges) {
            if targets(e).is_empty() && n.gotos.is_empty() {
                return Err(GraphError::MissingEdge(n.name.to_string()));
            }
        }
        let mut seen = HashSet::new();
        let mut queue: VecDeque<String> = targets(&start).into();
        while let Some(n) = queue.pop_front() {
            if n == END || !seen.insert(n.clone()) {
                continue;
            }
            let i = by_name[&n];
            queue.extend(targets(&edges[i]));
            queue.extend(self.nodes[i].gotos.iter().cloned());
        }
        if let Some(n) = self.nodes.iter().find(|n| !seen.contains(&*n.name)) {
            return Err(GraphError::Unreachable(n.name.to_string()));
        }
        Ok(Graph { schema: self.schema, nodes: self.nodes, by_name, edges, start, step_limit: self.step_limit })
    }
}
