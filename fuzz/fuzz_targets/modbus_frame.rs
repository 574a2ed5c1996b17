//! Any bytes a client can send through the Modbus frame layer: splitting
//! ADUs off a buffer, decoding each PDU, mapping it to a guard action and
//! answering it as the simulated meter would. None of it may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metergate::doors::modbus::action_of;
use metergate::mbap as frame;
use metergate::fleet::simulator::MeterState;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut meter = MeterState::default();
    while let Ok(Some((header, pdu, used))) = frame::split(rest) {
        assert!(used <= rest.len() && used >= frame::MBAP_LEN + 1);
        if let Ok(request) = frame::Pdu::decode(pdu) {
            let _ = action_of("meter-1", &request);
            let answer = meter.handle(&request);
            let _ = frame::adu(header, &answer);
        }
        rest = &rest[used..];
    }
});
