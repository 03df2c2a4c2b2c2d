//! The authorized-entry index: which registration entries each agent may have, kept in memory
//! and updated change by change (issue 3 item 7; architecture.md §6).
//!
//! An agent may have:
//! - the entries whose parent is the agent's own ID;
//! - the entries whose parent is a node alias the agent belongs to. A node alias is an entry
//!   parented to the server's ID; an agent belongs to it when the alias's selectors are a
//!   subset of the agent's node selectors;
//! - recursively, the entries whose parent is the SPIFFE ID of an entry it may have (nested
//!   agents and downstream servers obtain their children this way).
//!
//! Every update answers "which agents does this change affect", so that the change is pushed
//! to those agents' sync streams and no others. The cost of an update depends on the entries
//! and agents it touches, not on how many there are: selectors are indexed in both directions
//! (selector → agents holding it, selector → aliases needing it), entries by parent and by
//! SPIFFE ID.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sigil_core::{EntryId, RegistrationEntry, Selector, SelectorSet, server_spiffe_id};
use sigil_spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Agents affected by a change.
pub type Affected = HashSet<SpiffeId>;

/// What an entry change may have changed for each affected agent, so that its sync stream
/// looks at that much and no more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only whether the agent has this entry, and in which version.
    Entry(EntryId),
    /// Possibly any of its entries: a node alias changed (members join or leave, with
    /// everything under it), or the entry hands out an ID that other entries are parented
    /// to (nesting: everything below it moves along).
    Everything,
}

/// The in-memory index of entries and agents.
#[derive(Debug)]
pub struct EntryIndex {
    server_id: SpiffeId,
    entries: HashMap<EntryId, Arc<RegistrationEntry>>,
    /// Entry IDs by parent ID.
    children: HashMap<SpiffeId, HashSet<EntryId>>,
    /// Entry IDs by the SPIFFE ID they hand out (to walk from a parent up to the agents).
    by_spiffe_id: HashMap<SpiffeId, HashSet<EntryId>>,
    /// Node selectors of each attested agent.
    agents: HashMap<SpiffeId, SelectorSet>,
    /// Agents holding each node selector.
    agents_by_selector: HashMap<Selector, HashSet<SpiffeId>>,
    /// Node-alias entry IDs needing each selector.
    aliases_by_selector: HashMap<Selector, HashSet<EntryId>>,
    /// Node aliases (by SPIFFE ID) each agent belongs to.
    agent_aliases: HashMap<SpiffeId, HashSet<SpiffeId>>,
    /// Agents belonging to each node alias (by the alias's SPIFFE ID). Several alias entries
    /// may share a SPIFFE ID; an agent belongs to the ID when it matches any of them.
    alias_members: HashMap<SpiffeId, HashMap<SpiffeId, usize>>,
}

impl EntryIndex {
    /// An empty index for a trust domain.
    pub fn new(trust_domain: &TrustDomain) -> Result<Self, SpiffeIdError> {
        Ok(Self {
            server_id: server_spiffe_id(trust_domain)?,
            entries: HashMap::new(),
            children: HashMap::new(),
            by_spiffe_id: HashMap::new(),
            agents: HashMap::new(),
            agents_by_selector: HashMap::new(),
            aliases_by_selector: HashMap::new(),
            agent_aliases: HashMap::new(),
            alias_members: HashMap::new(),
        })
    }

    /// The number of entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The entry with this ID.
    pub fn entry(&self, id: &EntryId) -> Option<&Arc<RegistrationEntry>> {
        self.entries.get(id)
    }

    /// Adds or replaces an entry; returns the agents whose authorized entries changed.
    pub fn upsert_entry(&mut self, entry: RegistrationEntry) -> Affected {
        // Whoever could see the old version learns of the change too.
        let mut affected = self.remove_entry(&entry.id);
        let entry = Arc::new(entry);
        self.children
            .entry(entry.parent_id.clone())
            .or_default()
            .insert(entry.id.clone());
        self.by_spiffe_id
            .entry(entry.spiffe_id.clone())
            .or_default()
            .insert(entry.id.clone());
        self.entries.insert(entry.id.clone(), entry.clone());
        if entry.parent_id == self.server_id {
            let members = self.add_alias(&entry);
            affected.extend(members);
        }
        affected.extend(self.agents_reaching(&entry.parent_id));
        affected
    }

    /// Removes an entry; returns the agents whose authorized entries changed.
    pub fn remove_entry(&mut self, id: &EntryId) -> Affected {
        let Some(old) = self.entries.get(id).cloned() else {
            return Affected::new();
        };
        // Who could see it is decided before it goes.
        let mut affected = self.agents_reaching(&old.parent_id);
        if let Some((_, left)) = self.remove_entry_inner(id) {
            affected.extend(left);
        }
        affected
    }

    /// Records an agent and its node selectors (on attestation, or when they change); returns
    /// the agent itself when the node aliases it belongs to changed.
    pub fn set_agent(&mut self, agent: SpiffeId, selectors: SelectorSet) -> Affected {
        let before = self.agent_aliases.get(&agent).cloned().unwrap_or_default();
        self.remove_agent_inner(&agent);
        for selector in &selectors {
            self.agents_by_selector
                .entry(selector.clone())
                .or_default()
                .insert(agent.clone());
        }
        // Candidate aliases: those needing at least one of the agent's selectors.
        let candidates: HashSet<EntryId> = selectors
            .iter()
            .filter_map(|s| self.aliases_by_selector.get(s))
            .flatten()
            .cloned()
            .collect();
        for alias_id in candidates {
            if let Some(alias) = self.entries.get(&alias_id).cloned()
                && alias.selectors.is_subset_of(&selectors)
            {
                self.join_alias(&agent, &alias.spiffe_id);
            }
        }
        self.agents.insert(agent.clone(), selectors);
        let after = self.agent_aliases.get(&agent).cloned().unwrap_or_default();
        // Only aliases with children change what the agent may have.
        if before
            .symmetric_difference(&after)
            .any(|alias| self.children.contains_key(alias))
        {
            Affected::from([agent])
        } else {
            Affected::new()
        }
    }

    /// The node selectors of an agent that is recorded (attested and not banned).
    pub fn agent_selectors(&self, agent: &SpiffeId) -> Option<&SelectorSet> {
        self.agents.get(agent)
    }

    /// Forgets an agent (evicted).
    pub fn remove_agent(&mut self, agent: &SpiffeId) {
        self.remove_agent_inner(agent);
    }

    /// Every entry `agent` may have.
    pub fn authorized_entries(&self, agent: &SpiffeId) -> Vec<Arc<RegistrationEntry>> {
        // An agent that is not attested (or was evicted) has nothing, whatever is parented to
        // its ID.
        if !self.agents.contains_key(agent) {
            return Vec::new();
        }
        let mut roots: Vec<&SpiffeId> = vec![agent];
        if let Some(aliases) = self.agent_aliases.get(agent) {
            roots.extend(aliases);
        }
        let mut seen_parents: HashSet<&SpiffeId> = HashSet::new();
        let mut seen_entries: HashSet<&EntryId> = HashSet::new();
        let mut out = Vec::new();
        let mut stack = roots;
        while let Some(parent) = stack.pop() {
            if !seen_parents.insert(parent) {
                continue;
            }
            for id in self.children.get(parent).into_iter().flatten() {
                if seen_entries.insert(id)
                    && let Some(entry) = self.entries.get(id)
                {
                    out.push(entry.clone());
                    stack.push(&entry.spiffe_id);
                }
            }
        }
        out
    }

    /// True when `agent` may have the entry `id`. Walks up from the entry's parent, so it
    /// costs the depth of the nesting, not the size of the agent's set nor the number of
    /// agents in a node alias.
    pub fn is_authorized(&self, agent: &SpiffeId, id: &EntryId) -> bool {
        if !self.agents.contains_key(agent) {
            return false;
        }
        let Some(entry) = self.entries.get(id) else {
            return false;
        };
        let mut seen: HashSet<&SpiffeId> = HashSet::new();
        let mut stack = vec![&entry.parent_id];
        while let Some(parent) = stack.pop() {
            if !seen.insert(parent) {
                continue;
            }
            if parent == agent
                || self
                    .alias_members
                    .get(parent)
                    .is_some_and(|members| members.contains_key(agent))
            {
                return true;
            }
            for entry_id in self.by_spiffe_id.get(parent).into_iter().flatten() {
                if let Some(entry) = self.entries.get(entry_id) {
                    stack.push(&entry.parent_id);
                }
            }
        }
        false
    }

    /// What writing `new` as the entry `id` (or removing it, `None`) may change for the
    /// agents it affects; asked before the change is made. Most changes are
    /// [`Scope::Entry`]: a workload entry, under an agent or a node alias, that no other
    /// entry is parented to.
    pub fn change_scope(&self, id: &EntryId, new: Option<&RegistrationEntry>) -> Scope {
        let old = self.entries.get(id).map(|entry| &**entry);
        let alias = |entry: &RegistrationEntry| entry.parent_id == self.server_id;
        let has_children = |entry: &RegistrationEntry| self.children.contains_key(&entry.spiffe_id);
        if old.is_some_and(alias) || new.is_some_and(alias) {
            return Scope::Everything;
        }
        // An entry that keeps its place (parent and SPIFFE ID) moves nothing below it.
        let same_place = matches!((old, new), (Some(o), Some(n))
            if o.parent_id == n.parent_id && o.spiffe_id == n.spiffe_id);
        if !same_place && (old.is_some_and(has_children) || new.is_some_and(has_children)) {
            return Scope::Everything;
        }
        Scope::Entry(id.clone())
    }

    /// The agents that receive the children of `parent`: walk up through the entries that
    /// hand out `parent` until agents or node aliases are reached.
    fn agents_reaching(&self, parent: &SpiffeId) -> Affected {
        let mut agents = Affected::new();
        let mut seen: HashSet<&SpiffeId> = HashSet::new();
        let mut stack = vec![parent];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if self.agents.contains_key(id) {
                agents.insert(id.clone());
            }
            if let Some(members) = self.alias_members.get(id) {
                agents.extend(members.keys().cloned());
            }
            for entry_id in self.by_spiffe_id.get(id).into_iter().flatten() {
                if let Some(entry) = self.entries.get(entry_id) {
                    stack.push(&entry.parent_id);
                }
            }
        }
        agents
    }

    /// Indexes a node-alias entry and enrols the agents it matches; returns them.
    fn add_alias(&mut self, alias: &RegistrationEntry) -> Affected {
        for selector in &alias.selectors {
            self.aliases_by_selector
                .entry(selector.clone())
                .or_default()
                .insert(alias.id.clone());
        }
        // Candidates: the agents holding the alias's rarest selector.
        let rarest = alias
            .selectors
            .iter()
            .min_by_key(|s| self.agents_by_selector.get(*s).map_or(0, HashSet::len));
        let candidates: Vec<SpiffeId> = rarest
            .and_then(|s| self.agents_by_selector.get(s))
            .into_iter()
            .flatten()
            .filter(|agent| {
                self.agents
                    .get(*agent)
                    .is_some_and(|selectors| alias.selectors.is_subset_of(selectors))
            })
            .cloned()
            .collect();
        let has_children = self.children.contains_key(&alias.spiffe_id);
        let mut joined = Affected::new();
        for agent in candidates {
            if self.join_alias(&agent, &alias.spiffe_id) && has_children {
                joined.insert(agent);
            }
        }
        joined
    }

    /// Counts one more matching alias entry for `agent`; true when the agent was not a member
    /// of the alias ID before.
    fn join_alias(&mut self, agent: &SpiffeId, alias: &SpiffeId) -> bool {
        let count = self
            .alias_members
            .entry(alias.clone())
            .or_default()
            .entry(agent.clone())
            .or_default();
        *count += 1;
        let first = *count == 1;
        self.agent_aliases
            .entry(agent.clone())
            .or_default()
            .insert(alias.clone());
        first
    }

    /// Counts one less matching alias entry for `agent`; true when it is no longer a member.
    fn leave_alias(&mut self, agent: &SpiffeId, alias: &SpiffeId) -> bool {
        let Some(members) = self.alias_members.get_mut(alias) else {
            return false;
        };
        let Some(count) = members.get_mut(agent) else {
            return false;
        };
        *count -= 1;
        let last = *count == 0;
        if last {
            members.remove(agent);
            if members.is_empty() {
                self.alias_members.remove(alias);
            }
            if let Some(aliases) = self.agent_aliases.get_mut(agent) {
                aliases.remove(alias);
                if aliases.is_empty() {
                    self.agent_aliases.remove(agent);
                }
            }
        }
        last
    }

    /// Removes an entry from every map; returns it and, for a node alias whose ID has
    /// children, the agents that stopped being members.
    fn remove_entry_inner(&mut self, id: &EntryId) -> Option<(Arc<RegistrationEntry>, Affected)> {
        let old = self.entries.remove(id)?;
        let mut left = Affected::new();
        remove_from(&mut self.children, &old.parent_id, id);
        remove_from(&mut self.by_spiffe_id, &old.spiffe_id, id);
        if old.parent_id == self.server_id {
            for selector in &old.selectors {
                remove_from(&mut self.aliases_by_selector, selector, id);
            }
            let members: Vec<SpiffeId> = self
                .alias_members
                .get(&old.spiffe_id)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for agent in members {
                let matched = self
                    .agents
                    .get(&agent)
                    .is_some_and(|selectors| old.selectors.is_subset_of(selectors));
                if matched && self.leave_alias(&agent, &old.spiffe_id) {
                    left.insert(agent);
                }
            }
            if !self.children.contains_key(&old.spiffe_id) {
                left.clear();
            }
        }
        Some((old, left))
    }

    fn remove_agent_inner(&mut self, agent: &SpiffeId) {
        let Some(selectors) = self.agents.remove(agent) else {
            return;
        };
        for selector in &selectors {
            remove_from(&mut self.agents_by_selector, selector, agent);
        }
        if let Some(aliases) = self.agent_aliases.remove(agent) {
            for alias in aliases {
                if let Some(members) = self.alias_members.get_mut(&alias) {
                    members.remove(agent);
                    if members.is_empty() {
                        self.alias_members.remove(&alias);
                    }
                }
            }
        }
    }
}

fn remove_from<K, V>(map: &mut HashMap<K, HashSet<V>>, key: &K, value: &V)
where
    K: std::hash::Hash + Eq,
    V: std::hash::Hash + Eq,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
