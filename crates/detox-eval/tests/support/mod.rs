//! Helpers of the detox-eval integration tests (each test binary uses some of them).
#![allow(dead_code)]

pub mod chromium;
pub mod fixtures;
pub mod judges;
