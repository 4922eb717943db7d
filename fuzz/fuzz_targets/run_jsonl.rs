#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "records.jsonl", detox_fuzz::readers::run_jsonl);
});
