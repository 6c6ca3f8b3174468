//! One attempt at an invocation, from the envelope to its settlement: open the envelope,
//! claim the attempt in the ledger ([`attempt`]), get the code ready
//! ([`crate::code`]), run it in the emulator ([`execution`]), deliver the outcome record
//! ([`report`]) and settle the attempt ([`settlement`]). [`drain`] does the same for
//! each message of the overflow queues, one function's code at a time ([`tenancy`]); [`in_process`] runs a handler library instead of
//! a bootstrap; [`scratch`] makes each run's scratch folder and removes dead runners'.

pub(crate) mod attempt;
pub(crate) mod drain;
pub(crate) mod execution;
pub(crate) mod in_process;
pub(crate) mod report;
pub(crate) mod scratch;
pub(crate) mod settlement;
pub(crate) mod tenancy;
