//! Any bytes a meter's console can send, as a recording writes them: split
//! anywhere, decoded without splitting a UTF-8 sequence, and escaped into
//! asciicast lines (json-escape-simd). Every line must read back with
//! serde_json as exactly the text that was shown, and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metergate::recording::cast::{Utf8Carry, event, shown};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(bytes.len());
    let mut carry = Utf8Carry::default();
    let mut text = String::new();
    for piece in [&bytes[..cut], &bytes[cut..]] {
        let part = carry.push(piece);
        let line = event(1.25, "o", &part);
        let line = std::str::from_utf8(&line).expect("a line is UTF-8");
        assert!(line.ends_with("]\n") && !line[..line.len() - 1].contains('\n'));
        let back = shown(line.trim_end()).expect("a line reads back");
        assert_eq!(back.text, part);
        text.push_str(&part);
    }
    // Split or not, the same text (an incomplete sequence at the very end
    // still waits for its next bytes).
    assert!(String::from_utf8_lossy(bytes).starts_with(&text));
});
