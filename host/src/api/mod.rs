//! The REST APIs. `legacy` serves the RocketMQ-Connect API answer for answer.

pub mod legacy;
