#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    detox_fuzz::check(data, "nlpcc.json", detox_fuzz::readers::nlpcc_json);
});
