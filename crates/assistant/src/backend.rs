//! The reference back end: an in-process fake crypto exchange (customers, cards, transfers,
//! deposits, tickets) behind the [`ToolBackend`] trait, so the assistant's tools make real state
//! changes that tests can check.
//!
//! Key design decision: every mutating call may carry an idempotency key (the engine's
//! `ctx.idempotency_key(n)`); a key seen before with the same tool and arguments returns the
//! stored result without running again, and with other arguments is a [`ToolError::Conflict`].
//! A resumed or retried run therefore never freezes a card twice or opens two tickets.
//!
//! # Seed data (a contract)
//!
//! Scenario files and tests rely on exactly this data, created by [`FakeExchange::seeded`]
//! (times are relative to the moment of seeding):
//!
//! | customer | name | language | account | cards |
//! |---|---|---|---|---|
//! | `cust_001` | Ana Souza | `pt-BR` | active | `4242` debit (physical, active), `1881` virtual (active) |
//! | `cust_002` | Bruno Lima | `en` | **locked** (too many failed 2FA attempts) | `7777` debit (physical, **frozen**) |
//!
//! Transfers of `cust_001`: `tr_1001` outgoing 250.00 EUR to Marta Lima, **pending**, created
//! yesterday (24 h before seeding), expected within 1 business day; `tr_1002` outgoing 80.00 EUR
//! to Pedro Alves, **completed** three days ago.
//!
//! Deposits of `cust_001`:
//! * `dep_2001`: 0.5 ETH on Ethereum, tx hash
//!   `0x5e1f0c3b7a9d4e2f8c6b1a0d9e8f7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b1a0f`, **5 of 12**
//!   confirmations (status `confirming`).
//! * `dep_2002`: 300 USDC sent on **Polygon** to a deposit address that accepts only Ethereum, tx hash
//!   `0x8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b` (status `wrong_network`,
//!   recoverable through a ticket, fee 25 USDC, 5 to 10 business days).
//!
//! Tickets are numbered from `tk_5001`; replacement card orders from `ord_7001`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Tool names of the reference back end.
pub const TOOL_NAMES: &[&str] = &[
    "freeze_card",
    "unfreeze_card",
    "order_replacement_card",
    "get_card_status",
    "get_transfer_status",
    "list_recent_transfers",
    "get_deposit_status",
    "create_ticket",
];

/// The ETH deposit of the seed data (5 of 12 confirmations).
pub const SEED_ETH_TX: &str = "0x5e1f0c3b7a9d4e2f8c6b1a0d9e8f7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b1a0f";
/// The USDC deposit sent on the wrong network in the seed data.
pub const SEED_WRONG_NETWORK_TX: &str = "0x8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b";

const DAY_MS: i64 = 24 * 3600 * 1000;

/// One tool invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Tool name.
    pub name: String,
    /// The customer on whose behalf it runs (every tool is scoped to one customer).
    pub customer_id: String,
    /// Arguments.
    pub args: Value,
    /// Deduplication key for side effects.
    pub idempotency_key: Option<String>,
    /// The conversation it runs for, when it runs in one (recording and replay key calls by it).
    pub conversation_id: Option<String>,
}

/// Why a tool call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolError {
    /// No such tool.
    #[error("unknown tool `{0}`")]
    UnknownTool(String),
    /// Missing or malformed arguments.
    #[error("bad arguments for {tool}: {reason}")]
    BadArgs {
        /// The tool.
        tool: String,
        /// What was wrong.
        reason: String,
    },
    /// The customer, card, transfer or deposit does not exist (for this customer).
    #[error("{0}")]
    NotFound(String),
    /// The idempotency key was used before with other arguments.
    #[error("idempotency key `{0}` was already used for another request")]
    Conflict(String),
}

/// A back end the assistant's tools run against.
pub trait ToolBackend: Send + Sync {
    /// Runs a tool.
    ///
    /// # Errors
    /// [`ToolError`] for unknown tools, bad arguments, unknown entities, reused keys.
    fn call(&self, call: &ToolCall) -> Result<Value, ToolError>;
    /// The tools it offers.
    fn tool_names(&self) -> Vec<String>;
}

/// A customer of the fake exchange.
#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    /// Id.
    pub id: String,
    /// Full name.
    pub name: String,
    /// Preferred language.
    pub language: String,
    /// `active` or `locked`.
    pub account_status: String,
    /// Why the account is locked.
    pub lock_reason: Option<String>,
}

/// A card.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    /// Owner.
    pub customer_id: String,
    /// Last four digits.
    pub last4: String,
    /// `debit` (physical) or `virtual`.
    pub kind: String,
    /// `active`, `frozen` or `replaced`.
    pub status: String,
}

/// A transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    /// Id.
    pub id: String,
    /// Owner.
    pub customer_id: String,
    /// Amount as a decimal string.
    pub amount: String,
    /// Currency.
    pub currency: String,
    /// `outgoing` or `incoming`.
    pub direction: String,
    /// The other party.
    pub counterparty: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Human-readable expectation.
    pub eta: String,
}

/// A crypto deposit.
#[derive(Debug, Clone, Serialize)]
pub struct Deposit {
    /// Id.
    pub id: String,
    /// Owner.
    pub customer_id: String,
    /// Asset symbol.
    pub asset: String,
    /// Amount as a decimal string.
    pub amount: String,
    /// The network it was sent on.
    pub network: String,
    /// The network the deposit address accepts.
    pub address_network: String,
    /// Transaction hash.
    pub tx_hash: String,
    /// Confirmations so far.
    pub confirmations: u32,
    /// Confirmations required.
    pub required_confirmations: u32,
    /// `confirming`, `credited` or `wrong_network`.
    pub status: String,
}

/// A support ticket.
#[derive(Debug, Clone, Serialize)]
pub struct Ticket {
    /// Id.
    pub id: String,
    /// Owner.
    pub customer_id: String,
    /// Category (`account_access`, `deposit_recovery`, `fraud`, ...).
    pub category: String,
    /// Summary (redacted text only).
    pub summary: String,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// `open`.
    pub status: String,
}

/// A replacement card order.
#[derive(Debug, Clone, Serialize)]
pub struct CardOrder {
    /// Id.
    pub id: String,
    /// Owner.
    pub customer_id: String,
    /// The card it replaces.
    pub replaces: String,
    /// Delivery estimate in business days.
    pub eta_days: String,
}

#[derive(Debug, Default)]
struct Data {
    customers: BTreeMap<String, Customer>,
    cards: Vec<Card>,
    transfers: Vec<Transfer>,
    deposits: Vec<Deposit>,
    tickets: Vec<Ticket>,
    orders: Vec<CardOrder>,
    next_ticket: u32,
    next_order: u32,
    /// idempotency key → (tool, args, result)
    seen: HashMap<String, (String, Value, Value)>,
    /// Calls that actually ran (not replays), in order.
    executed: Vec<ToolCall>,
}

/// The fake exchange. Cheap to clone (shared state).
#[derive(Debug, Clone, Default)]
pub struct FakeExchange {
    data: Arc<Mutex<Data>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl FakeExchange {
    /// The exchange with the documented seed data (see the module docs).
    pub fn seeded() -> Self {
        let now = now_ms();
        let mut d = Data { next_ticket: 5001, next_order: 7001, ..Data::default() };
        let cust = |id: &str, name: &str, lang: &str, status: &str, reason: Option<&str>| Customer {
            id: id.into(),
            name: name.into(),
            language: lang.into(),
            account_status: status.into(),
            lock_reason: reason.map(str::to_string),
        };
        for c in [
            cust("cust_001", "Ana Souza", "pt-BR", "active", None),
            cust("cust_002", "Bruno Lima", "en", "locked", Some("too many failed 2FA attempts")),
        ] {
            d.customers.insert(c.id.clone(), c);
        }
        let card = |c: &str, l: &str, k: &str, s: &str| Card {
            customer_id: c.into(),
            last4: l.into(),
            kind: k.into(),
            status: s.into(),
        };
        d.cards = vec![
            card("cust_001", "4242", "debit", "active"),
            card("cust_001", "1881", "virtual", "active"),
            card("cust_002", "7777", "debit", "frozen"),
        ];
        d.transfers = vec![
            Transfer {
                id: "tr_1001".into(),
                customer_id: "cust_001".into(),
                amount: "250.00".into(),
                currency: "EUR".into(),
                direction: "outgoing".into(),
                counterparty: "Marta Lima".into(),
                status: "pending".into(),
                created_at_ms: now - DAY_MS,
                eta: "within 1 business day".into(),
            },
            Transfer {
                id: "tr_1002".into(),
                customer_id: "cust_001".into(),
                amount: "80.00".into(),
                currency: "EUR".into(),
                direction: "outgoing".into(),
                counterparty: "Pedro Alves".into(),
                status: "completed".into(),
                created_at_ms: now - 3 * DAY_MS,
                eta: "delivered".into(),
            },
        ];
        d.deposits = vec![
            Deposit {
                id: "dep_2001".into(),
                customer_id: "cust_001".into(),
                asset: "ETH".into(),
                amount: "0.5".into(),
                network: "ethereum".into(),
                address_network: "ethereum".into(),
                tx_hash: SEED_ETH_TX.into(),
                confirmations: 5,
                required_confirmations: 12,
                status: "confirming".into(),
            },
            Deposit {
                id: "dep_2002".into(),
                customer_id: "cust_001".into(),
                asset: "USDC".into(),
                amount: "300".into(),
                network: "polygon".into(),
                address_network: "ethereum".into(),
                tx_hash: SEED_WRONG_NETWORK_TX.into(),
                confirmations: 128,
                required_confirmations: 12,
                status: "wrong_network".into(),
            },
        ];
        Self { data: Arc::new(Mutex::new(d)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A customer, if known.
    pub fn customer(&self, id: &str) -> Option<Customer> {
        self.lock().customers.get(id).cloned()
    }

    /// A card by owner and last four digits.
    pub fn card(&self, customer_id: &str, last4: &str) -> Option<Card> {
        self.lock().cards.iter().find(|c| c.customer_id == customer_id && c.last4 == last4).cloned()
    }

    /// The cards of a customer.
    pub fn cards(&self, customer_id: &str) -> Vec<Card> {
        self.lock().cards.iter().filter(|c| c.customer_id == customer_id).cloned().collect()
    }

    /// The tickets of a customer.
    pub fn tickets(&self, customer_id: &str) -> Vec<Ticket> {
        self.lock().tickets.iter().filter(|t| t.customer_id == customer_id).cloned().collect()
    }

    /// Replacement card orders of a customer.
    pub fn orders(&self, customer_id: &str) -> Vec<CardOrder> {
        self.lock().orders.iter().filter(|o| o.customer_id == customer_id).cloned().collect()
    }

    /// Calls that ran (idempotent replays are not listed).
    pub fn executed(&self) -> Vec<ToolCall> {
        self.lock().executed.clone()
    }
}

fn arg<'a>(call: &'a ToolCall, name: &str) -> Result<&'a str, ToolError> {
    call.args.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| ToolError::BadArgs {
        tool: call.name.clone(),
        reason: format!("`{name}` (a string) is required"),
    })
}

fn card_json(c: &Card) -> Value {
    json!({"last4": c.last4, "kind": c.kind, "status": c.status})
}

fn transfer_json(t: &Transfer) -> Value {
    json!({
        "transfer_id": t.id, "amount": t.amount, "currency": t.currency, "direction": t.direction,
        "counterparty": t.counterparty, "status": t.status, "created_at_ms": t.created_at_ms, "eta": t.eta,
    })
}

impl Data {
    fn card_mut(&mut self, call: &ToolCall) -> Result<&mut Card, ToolError> {
        let last4 = arg(call, "last4")?.to_string();
        self.cards
            .iter_mut()
            .find(|c| c.customer_id == call.customer_id && c.last4 == last4)
            .ok_or_else(|| ToolError::NotFound(format!("no card ending {last4} for this customer")))
    }

    fn run(&mut self, call: &ToolCall) -> Result<Value, ToolError> {
        let cust = call.customer_id.clone();
        match call.name.as_str() {
            "freeze_card" | "unfreeze_card" => {
                let to = if call.name == "freeze_card" { "frozen" } else { "active" };
                let card = self.card_mut(call)?;
                if card.status == "replaced" {
                    return Err(ToolError::NotFound(format!("card ending {} was replaced", card.last4)));
                }
                let changed = card.status != to;
                card.status = to.into();
                Ok(json!({"last4": card.last4, "status": card.status, "changed": changed}))
            }
            "order_replacement_card" => {
                let card = self.card_mut(call)?;
                card.status = "replaced".into();
                let last4 = card.last4.clone();
                let kind = card.kind.clone();
                let id = format!("ord_{}", self.next_order);
                self.next_order += 1;
                let eta_days = if kind == "virtual" { "0" } else { "5-7" }.to_string();
                self.orders.push(CardOrder {
                    id: id.clone(),
                    customer_id: cust,
                    replaces: last4.clone(),
                    eta_days: eta_days.clone(),
                });
                Ok(json!({"order_id": id, "replaces": last4, "kind": kind, "eta_business_days": eta_days}))
            }
            "get_card_status" => match call.args.get("last4").and_then(Value::as_str) {
                Some(_) => {
                    let card = self.card_mut(call)?;
                    Ok(card_json(card))
                }
                None => Ok(json!({"cards": self
                    .cards
                    .iter()
                    .filter(|c| c.customer_id == cust)
                    .map(card_json)
                    .collect::<Vec<_>>()})),
            },
            "get_transfer_status" => {
                let id = arg(call, "transfer_id")?;
                self.transfers
                    .iter()
                    .find(|t| t.customer_id == cust && t.id == id)
                    .map(transfer_json)
                    .ok_or_else(|| ToolError::NotFound(format!("no transfer {id} for this customer")))
            }
            "list_recent_transfers" => {
                let limit = call.args.get("limit").and_then(Value::as_u64).unwrap_or(5).clamp(1, 50) as usize;
                let mut ts: Vec<&Transfer> = self.transfers.iter().filter(|t| t.customer_id == cust).collect();
                ts.sort_by_key(|t| std::cmp::Reverse(t.created_at_ms));
                Ok(json!({"transfers": ts.into_iter().take(limit).map(transfer_json).collect::<Vec<_>>()}))
            }
            "get_deposit_status" => {
                let hash = arg(call, "tx_hash")?.to_ascii_lowercase();
                let d = self
                    .deposits
                    .iter()
                    .find(|d| d.customer_id == cust && d.tx_hash == hash)
                    .ok_or_else(|| ToolError::NotFound("no deposit with this transaction hash".into()))?;
                let mut v = json!({
                    "deposit_id": d.id, "asset": d.asset, "amount": d.amount, "network": d.network,
                    "address_network": d.address_network, "tx_hash": d.tx_hash, "status": d.status,
                    "confirmations": d.confirmations, "required_confirmations": d.required_confirmations,
                });
                if d.status == "wrong_network" {
                    v["recovery"] =
                        json!({"possible": true, "fee": format!("25 {}", d.asset), "business_days": "5-10"});
                }
                Ok(v)
            }
            "create_ticket" => {
                let category = arg(call, "category")?.to_string();
                let summary = arg(call, "summary")?.to_string();
                let priority = call.args.get("priority").and_then(Value::as_str).unwrap_or("normal").to_string();
                if !["low", "normal", "high", "urgent"].contains(&priority.as_str()) {
                    return Err(ToolError::BadArgs {
                        tool: call.name.clone(),
                        reason: format!("priority `{priority}` is not low, normal, high or urgent"),
                    });
                }
                let id = format!("tk_{}", self.next_ticket);
                self.next_ticket += 1;
                self.tickets.push(Ticket {
                    id: id.clone(),
                    customer_id: cust,
                    category: category.clone(),
                    summary,
                    priority: priority.clone(),
                    status: "open".into(),
                });
                Ok(json!({"ticket_id": id, "category": category, "priority": priority, "status": "open"}))
            }
            other => Err(ToolError::UnknownTool(other.to_string())),
        }
    }
}

impl ToolBackend for FakeExchange {
    fn call(&self, call: &ToolCall) -> Result<Value, ToolError> {
        let mut d = self.lock();
        if !d.customers.contains_key(&call.customer_id) {
            return Err(ToolError::NotFound(format!("unknown customer `{}`", call.customer_id)));
        }
        if let Some(key) = &call.idempotency_key
            && let Some((name, args, result)) = d.seen.get(key)
        {
            return if *name == call.name && *args == call.args {
                Ok(result.clone())
            } else {
                Err(ToolError::Conflict(key.clone()))
            };
        }
        let result = d.run(call)?;
        if let Some(key) = &call.idempotency_key {
            d.seen.insert(key.clone(), (call.name.clone(), call.args.clone(), result.clone()));
        }
        d.executed.push(call.clone());
        Ok(result)
    }

    fn tool_names(&self) -> Vec<String> {
        TOOL_NAMES.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call(name: &str, args: Value, key: Option<&str>) -> ToolCall {
        ToolCall {
            name: name.into(),
            customer_id: "cust_001".into(),
            args,
            idempotency_key: key.map(Into::into),
            conversation_id: None,
        }
    }

    #[test]
    fn idempotency_key_replays_and_rejects_other_arguments() {
        let x = FakeExchange::seeded();
        let a = x.call(&call("create_ticket", json!({"category": "a", "summary": "s"}), Some("k1"))).unwrap();
        let b = x.call(&call("create_ticket", json!({"category": "a", "summary": "s"}), Some("k1"))).unwrap();
        assert_eq!(a, b);
        assert_eq!(x.tickets("cust_001").len(), 1);
        let e = x.call(&call("create_ticket", json!({"category": "b", "summary": "s"}), Some("k1"))).unwrap_err();
        assert!(matches!(e, ToolError::Conflict(_)));
        x.call(&call("create_ticket", json!({"category": "a", "summary": "s"}), None)).unwrap();
        assert_eq!(x.tickets("cust_001").len(), 2);
    }

    #[test]
    fn cards_are_scoped_to_their_customer() {
        let x = FakeExchange::seeded();
        let e = x.call(&call("freeze_card", json!({"last4": "7777"}), None)).unwrap_err();
        assert!(matches!(e, ToolError::NotFound(_)));
        assert_eq!(x.card("cust_002", "7777").unwrap().status, "frozen");
        let r = x.call(&call("get_deposit_status", json!({"tx_hash": SEED_ETH_TX.to_uppercase()}), None));
        assert!(r.is_ok(), "hashes are compared case-insensitively");
        let r = x.call(&call("get_deposit_status", json!({"tx_hash": SEED_ETH_TX}), None)).unwrap();
        assert_eq!(r["confirmations"], 5);
        assert_eq!(r["required_confirmations"], 12);
    }
}
