//! Helpers of the detox-eval integration tests.

pub mod chromium;
