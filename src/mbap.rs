//! Our own Modbus/TCP codec: the MBAP header is validated before anything is
//! decoded, every ADU of a segment is split off on its own, and every PDU is
//! checked against the quantity and byte-count limits of the specification.
//! tokio-modbus' codec is private and its server cannot sit behind a check
//! (DESIGN §4), so both the proxy's front side and the simulator use this.

/// MBAP header length: transaction id, protocol id, length, unit id.
pub const MBAP_LEN: usize = 7;
/// Largest PDU (and so `length` ≤ 254 with the unit id).
pub const MAX_PDU: usize = 253;

/// Exception codes used by the gateway.
pub mod exception {
    pub const ILLEGAL_FUNCTION: u8 = 0x01;
    pub const ILLEGAL_DATA_ADDRESS: u8 = 0x02;
    pub const ILLEGAL_DATA_VALUE: u8 = 0x03;
    pub const SERVER_DEVICE_BUSY: u8 = 0x06;
    pub const GATEWAY_PATH_UNAVAILABLE: u8 = 0x0A;
    pub const GATEWAY_TARGET_FAILED: u8 = 0x0B;
}

/// The MBAP header of one ADU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub transaction: u16,
    pub unit: u8,
}

/// A frame that cannot be Modbus/TCP: the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol id {0} is not 0 (Modbus)")]
    Protocol(u16),
    #[error("MBAP length {0} is outside 2..=254")]
    Length(u16),
    #[error("function code {0:#04x} is an exception code in a request")]
    ExceptionFunction(u8),
}

/// One ADU split off a buffer: header, PDU, and bytes consumed.
pub type Split<'a> = (Header, &'a [u8], usize);

/// Splits one ADU off the front of `buf`: `Ok(None)` until a whole frame is
/// there; the header is checked as soon as its 7 bytes are, so a header that
/// claims 0xFFFF bytes is refused at once instead of holding the connection.
pub fn split(buf: &[u8]) -> Result<Option<Split<'_>>, FrameError> {
    if buf.len() < MBAP_LEN {
        return Ok(None);
    }
    let transaction = u16::from_be_bytes([buf[0], buf[1]]);
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    let length = u16::from_be_bytes([buf[4], buf[5]]);
    if protocol != 0 {
        return Err(FrameError::Protocol(protocol));
    }
    if !(2..=254).contains(&length) {
        return Err(FrameError::Length(length));
    }
    let total = 6 + length as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let pdu = &buf[MBAP_LEN..total];
    if pdu[0] >= 0x80 {
        return Err(FrameError::ExceptionFunction(pdu[0]));
    }
    Ok(Some((
        Header {
            transaction,
            unit: buf[6],
        },
        pdu,
        total,
    )))
}

/// One ADU: header and PDU.
pub fn adu(h: Header, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MBAP_LEN + pdu.len());
    out.extend_from_slice(&h.transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&((pdu.len() + 1) as u16).to_be_bytes());
    out.push(h.unit);
    out.extend_from_slice(pdu);
    out
}

/// An exception response PDU.
pub fn exception_pdu(function: u8, code: u8) -> [u8; 2] {
    [function | 0x80, code]
}

/// A request, decoded and within the specification's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    /// FC 1, 2.
    ReadBits {
        function: u8,
        start: u16,
        count: u16,
    },
    /// FC 3, 4.
    ReadRegisters {
        function: u8,
        start: u16,
        count: u16,
    },
    /// FC 5.
    WriteCoil { address: u16, on: bool },
    /// FC 6.
    WriteRegister { address: u16, value: u16 },
    /// FC 8.
    Diagnostics { sub_function: u16 },
    /// FC 15.
    WriteCoils { start: u16, values: Vec<bool> },
    /// FC 16.
    WriteRegisters { start: u16, values: Vec<u16> },
    /// FC 22.
    MaskWrite { address: u16, and: u16, or: u16 },
    /// FC 23.
    ReadWrite {
        read_start: u16,
        read_count: u16,
        write_start: u16,
        values: Vec<u16>,
    },
    /// FC 43 / MEI 14.
    DeviceId { read_code: u8, object: u8 },
    /// Anything else (43 with another MEI type, user-defined codes...).
    Other { function: u8 },
}

fn u16_at(p: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

impl Pdu {
    pub fn function(&self) -> u8 {
        match self {
            Pdu::ReadBits { function, .. }
            | Pdu::ReadRegisters { function, .. }
            | Pdu::Other { function } => *function,
            Pdu::WriteCoil { .. } => 5,
            Pdu::WriteRegister { .. } => 6,
            Pdu::Diagnostics { .. } => 8,
            Pdu::WriteCoils { .. } => 15,
            Pdu::WriteRegisters { .. } => 16,
            Pdu::MaskWrite { .. } => 22,
            Pdu::ReadWrite { .. } => 23,
            Pdu::DeviceId { .. } => 43,
        }
    }

    /// Decodes a request PDU; `Err(exception code)` when it breaks a limit
    /// (03: quantity or byte count; 02: range past 65535).
    pub fn decode(p: &[u8]) -> Result<Pdu, u8> {
        use exception::*;
        let bad = ILLEGAL_DATA_VALUE;
        let f = *p.first().ok_or(bad)?;
        let range = |start: u16, count: u16, max: u16| -> Result<(), u8> {
            if count == 0 || count > max {
                return Err(bad);
            }
            if start as u32 + count as u32 > 65_536 {
                return Err(ILLEGAL_DATA_ADDRESS);
            }
            Ok(())
        };
        match f {
            1..=4 => {
                if p.len() != 5 {
                    return Err(bad);
                }
                let (start, count) = (u16_at(p, 1).ok_or(bad)?, u16_at(p, 3).ok_or(bad)?);
                if f <= 2 {
                    range(start, count, 2000)?;
                    Ok(Pdu::ReadBits {
                        function: f,
                        start,
                        count,
                    })
                } else {
                    range(start, count, 125)?;
                    Ok(Pdu::ReadRegisters {
                        function: f,
                        start,
                        count,
                    })
                }
            }
            5 => {
                if p.len() != 5 {
                    return Err(bad);
                }
                let address = u16_at(p, 1).ok_or(bad)?;
                match u16_at(p, 3).ok_or(bad)? {
                    0xFF00 => Ok(Pdu::WriteCoil { address, on: true }),
                    0x0000 => Ok(Pdu::WriteCoil { address, on: false }),
                    _ => Err(bad),
                }
            }
            6 => {
                if p.len() != 5 {
                    return Err(bad);
                }
                Ok(Pdu::WriteRegister {
                    address: u16_at(p, 1).ok_or(bad)?,
                    value: u16_at(p, 3).ok_or(bad)?,
                })
            }
            8 => Ok(Pdu::Diagnostics {
                sub_function: u16_at(p, 1).ok_or(bad)?,
            }),
            15 => {
                let (start, count) = (u16_at(p, 1).ok_or(bad)?, u16_at(p, 3).ok_or(bad)?);
                let bytes = *p.get(5).ok_or(bad)? as usize;
                range(start, count, 1968)?;
                if bytes != (count as usize).div_ceil(8) || p.len() != 6 + bytes {
                    return Err(bad);
                }
                let values = (0..count as usize)
                    .map(|i| p[6 + i / 8] & (1 << (i % 8)) != 0)
                    .collect();
                Ok(Pdu::WriteCoils { start, values })
            }
            16 => {
                let (start, count) = (u16_at(p, 1).ok_or(bad)?, u16_at(p, 3).ok_or(bad)?);
                let bytes = *p.get(5).ok_or(bad)? as usize;
                range(start, count, 123)?;
                if bytes != 2 * count as usize || p.len() != 6 + bytes {
                    return Err(bad);
                }
                let values = (0..count as usize)
                    .map(|i| u16::from_be_bytes([p[6 + 2 * i], p[7 + 2 * i]]))
                    .collect();
                Ok(Pdu::WriteRegisters { start, values })
            }
            22 => {
                if p.len() != 7 {
                    return Err(bad);
                }
                Ok(Pdu::MaskWrite {
                    address: u16_at(p, 1).ok_or(bad)?,
                    and: u16_at(p, 3).ok_or(bad)?,
                    or: u16_at(p, 5).ok_or(bad)?,
                })
            }
            23 => {
                let read_start = u16_at(p, 1).ok_or(bad)?;
                let read_count = u16_at(p, 3).ok_or(bad)?;
                let write_start = u16_at(p, 5).ok_or(bad)?;
                let write_count = u16_at(p, 7).ok_or(bad)?;
                let bytes = *p.get(9).ok_or(bad)? as usize;
                range(read_start, read_count, 125)?;
                range(write_start, write_count, 121)?;
                if bytes != 2 * write_count as usize || p.len() != 10 + bytes {
                    return Err(bad);
                }
                let values = (0..write_count as usize)
                    .map(|i| u16::from_be_bytes([p[10 + 2 * i], p[11 + 2 * i]]))
                    .collect();
                Ok(Pdu::ReadWrite {
                    read_start,
                    read_count,
                    write_start,
                    values,
                })
            }
            43 => match (p.get(1), p.get(2), p.get(3)) {
                (Some(14), Some(&read_code), Some(&object))
                    if p.len() == 4 && (1..=4).contains(&read_code) =>
                {
                    Ok(Pdu::DeviceId { read_code, object })
                }
                (Some(14), _, _) => Err(bad),
                _ => Ok(Pdu::Other { function: 43 }),
            },
            other => Ok(Pdu::Other { function: other }),
        }
    }
}

/// Builds request PDUs for the gateway's own requests (the shell's `read`
/// and named meter actions) and reads their answers.
pub mod request {
    /// FC 3: read `count` holding registers from `start`.
    pub fn read_holding(start: u16, count: u16) -> Vec<u8> {
        let mut p = vec![3];
        p.extend_from_slice(&start.to_be_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        p
    }

    /// A register write: FC 6 (one value) or FC 16 (several).
    pub fn write_registers(function: u8, start: u16, values: &[u16]) -> Vec<u8> {
        let mut p = vec![function];
        p.extend_from_slice(&start.to_be_bytes());
        if function == 6 {
            p.extend_from_slice(&values.first().copied().unwrap_or(0).to_be_bytes());
        } else {
            p.extend_from_slice(&(values.len() as u16).to_be_bytes());
            p.push((values.len() * 2) as u8);
            for v in values {
                p.extend_from_slice(&v.to_be_bytes());
            }
        }
        p
    }

    /// What a meter answered to a request of `function`.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Answer {
        /// The registers of a read (or nothing, for a write).
        Ok(Vec<u16>),
        /// An exception code.
        Exception(u8),
        /// Not an answer to that request.
        Malformed,
    }

    /// Reads the answer to a read of `count` registers (or, with
    /// `count` None, to a write).
    pub fn answer(function: u8, count: Option<u16>, pdu: &[u8]) -> Answer {
        match pdu.first() {
            Some(f) if *f == function => match count {
                Some(n) if pdu.len() == 2 + 2 * n as usize => Answer::Ok(
                    pdu[2..]
                        .chunks_exact(2)
                        .map(|v| u16::from_be_bytes([v[0], v[1]]))
                        .collect(),
                ),
                Some(_) => Answer::Malformed,
                None => Answer::Ok(Vec::new()),
            },
            Some(f) if *f == function | 0x80 => Answer::Exception(pdu.get(1).copied().unwrap_or(0)),
            _ => Answer::Malformed,
        }
    }

    /// An exception code in words.
    pub fn exception_words(code: u8) -> &'static str {
        match code {
            1 => "illegal function",
            2 => "illegal data address",
            3 => "illegal data value",
            4 => "server device failure",
            6 => "server device busy",
            10 => "gateway path unavailable",
            11 => "gateway target device failed to respond",
            _ => "exception",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_before_the_body_arrives() {
        assert_eq!(split(&[0, 1, 0, 0, 0, 6]), Ok(None));
        assert_eq!(split(&[0, 1, 0, 1, 0, 6, 1]), Err(FrameError::Protocol(1)));
        assert_eq!(
            split(&[0, 1, 0, 0, 0xff, 0xff, 1]),
            Err(FrameError::Length(0xffff))
        );
        assert_eq!(split(&[0, 1, 0, 0, 0, 1, 1]), Err(FrameError::Length(1)));
        assert_eq!(split(&[0, 1, 0, 0, 0, 6, 1, 3, 0]), Ok(None));
        assert_eq!(
            split(&[0, 1, 0, 0, 0, 2, 1, 0x83]),
            Err(FrameError::ExceptionFunction(0x83))
        );
        let two = [
            adu(
                Header {
                    transaction: 7,
                    unit: 1,
                },
                &[3, 0, 0, 0, 1],
            ),
            adu(
                Header {
                    transaction: 8,
                    unit: 2,
                },
                &[6, 0, 1, 0, 2],
            ),
        ]
        .concat();
        let (h, pdu, used) = split(&two).unwrap().unwrap();
        assert_eq!(
            (h.transaction, h.unit, pdu, used),
            (7, 1, &[3u8, 0, 0, 0, 1][..], 12)
        );
        let (h, _, _) = split(&two[used..]).unwrap().unwrap();
        assert_eq!(h.transaction, 8);
    }

    #[test]
    fn limits_of_the_specification() {
        use exception::*;
        for (pdu, expected) in [
            (
                vec![3, 0, 0, 0, 125],
                Ok(Pdu::ReadRegisters {
                    function: 3,
                    start: 0,
                    count: 125,
                }),
            ),
            (vec![3, 0, 0, 0, 126], Err(ILLEGAL_DATA_VALUE)),
            (vec![3, 0, 0, 0, 0], Err(ILLEGAL_DATA_VALUE)),
            (vec![3, 0xff, 0xff, 0, 2], Err(ILLEGAL_DATA_ADDRESS)),
            (vec![1, 0, 0, 0x07, 0xd1], Err(ILLEGAL_DATA_VALUE)),
            (vec![5, 0, 1, 0x12, 0x34], Err(ILLEGAL_DATA_VALUE)),
            (vec![16, 0, 0, 0x80, 0x00, 0], Err(ILLEGAL_DATA_VALUE)),
            (vec![16, 0, 0, 0, 2, 4, 0, 1], Err(ILLEGAL_DATA_VALUE)),
            (
                vec![16, 0, 0, 0, 1, 2, 0, 9],
                Ok(Pdu::WriteRegisters {
                    start: 0,
                    values: vec![9],
                }),
            ),
            (
                vec![23, 0, 0, 0x80, 0, 0, 0, 0, 1, 2, 0, 0],
                Err(ILLEGAL_DATA_VALUE),
            ),
            (
                vec![15, 0, 0, 0, 9, 2, 0xff, 0x01],
                Ok(Pdu::WriteCoils {
                    start: 0,
                    values: vec![true; 9],
                }),
            ),
            (
                vec![43, 14, 1, 0],
                Ok(Pdu::DeviceId {
                    read_code: 1,
                    object: 0,
                }),
            ),
            (vec![43, 13, 1, 0], Ok(Pdu::Other { function: 43 })),
            (vec![65], Ok(Pdu::Other { function: 65 })),
        ] {
            assert_eq!(Pdu::decode(&pdu), expected, "{pdu:?}");
        }
    }
}
