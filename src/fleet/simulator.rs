//! The simulated ION-class meter of DESIGN §3 (addresses are ours, not a
//! vendor's): measurements that change, a peak demand that grows, one
//! command register for peak-demand and master resets, a clock, test mode,
//! settings, and a counter of write requests at 6000 so tests can prove a
//! write reached the meter at most once. Served over Modbus/TCP with our own
//! codec, with a connection limit and fault injection like a real meter.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::mbap::{self as frame, Header, Pdu, exception};

/// Value written to 5000 to reset peak demand.
pub const PEAK_RESET: u16 = 21212;
/// Value written to 5000 for a master reset.
pub const MASTER_RESET: u16 = 1115;

const FIRST: u16 = 3000;
const LAST: u16 = 6000;

/// Fault injection, as `metergate simulate` flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub latency: Duration,
    /// Only every Nth request is slow (0 or 1: every request).
    pub slow_every: u64,
    /// Per mille of requests that get no answer at all.
    pub drop_per_mille: u32,
    /// Connections beyond this are closed at once (ION9000 takes 8).
    pub max_connections: usize,
}

/// One meter's registers.
pub struct MeterState {
    regs: Vec<u16>,
    peak: u16,
    energy: u32,
    clock_offset: i64,
    writes: u16,
}

impl Default for MeterState {
    fn default() -> Self {
        MeterState {
            regs: vec![0; (LAST - FIRST + 1) as usize],
            peak: 0,
            energy: 0,
            clock_offset: 0,
            writes: 0,
        }
    }
}

impl MeterState {
    fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc();
        now.checked_add(time::Duration::seconds(self.clock_offset))
            .unwrap_or(now)
    }

    /// Measurements move with time: demand follows a slow wave.
    fn refresh(&mut self) {
        let t = self.now().unix_timestamp();
        // rem_euclid: a clock set before 1970 gives a negative timestamp.
        let demand = 400 + (t.rem_euclid(600) - 300).unsigned_abs() as u16;
        self.energy = self.energy.wrapping_add(1);
        for i in 0..20u16 {
            let v = match i {
                0..=2 => 2300 + t.rem_euclid(7) as u16 + i, // volts × 10
                3..=5 => 100 + t.rem_euclid(13) as u16 + i, // amps × 10
                6 => demand,                                // kW
                18 => (self.energy >> 16) as u16,
                19 => self.energy as u16,
                _ => i * 10,
            };
            self.regs[i as usize] = v;
        }
        self.peak = self.peak.max(demand * 10);
        self.set(3100, self.peak);
        let now = self.now();
        for (i, v) in [
            now.year() as u16,
            now.month() as u16,
            now.day() as u16,
            now.hour() as u16,
            now.minute() as u16,
            now.second() as u16,
        ]
        .into_iter()
        .enumerate()
        {
            self.set(5010 + i as u16, v);
        }
        self.set(6000, self.writes);
    }

    /// One line of readings for the simulated console's `status`.
    pub fn summary(&mut self) -> String {
        self.refresh();
        format!(
            "voltage {:.1} V, demand {} kW, peak demand {:.1} kW, test mode {}, writes {}",
            f64::from(self.get(3000)) / 10.0,
            self.get(3006),
            f64::from(self.peak) / 10.0,
            if self.get(5020) == 1 { "on" } else { "off" },
            self.writes
        )
    }

    fn get(&self, a: u16) -> u16 {
        self.regs[(a - FIRST) as usize]
    }

    fn set(&mut self, a: u16, v: u16) {
        self.regs[(a - FIRST) as usize] = v;
    }

    fn readable(start: u16, count: u16) -> bool {
        start >= FIRST && start as u32 + count as u32 <= LAST as u32 + 1
    }

    /// Applies one register write as the meter would.
    fn write(&mut self, a: u16, v: u16) -> Result<(), u8> {
        match a {
            5000 => match v {
                PEAK_RESET => self.peak = 0,
                MASTER_RESET => {
                    self.peak = 0;
                    self.energy = 0;
                }
                _ => return Err(exception::ILLEGAL_DATA_VALUE),
            },
            5010..=5015 => {
                self.set(a, v);
                if a == 5015 {
                    let (y, mo, d, h, mi, s) = (
                        self.get(5010),
                        self.get(5011),
                        self.get(5012),
                        self.get(5013),
                        self.get(5014),
                        v,
                    );
                    let month = time::Month::try_from(mo as u8)
                        .map_err(|_| exception::ILLEGAL_DATA_VALUE)?;
                    let date = time::Date::from_calendar_date(y as i32, month, d as u8)
                        .map_err(|_| exception::ILLEGAL_DATA_VALUE)?;
                    let when = date
                        .with_hms(h as u8, mi as u8, s as u8)
                        .map_err(|_| exception::ILLEGAL_DATA_VALUE)?
                        .assume_utc();
                    self.clock_offset = (when - OffsetDateTime::now_utc()).whole_seconds();
                }
            }
            5020 if v <= 1 => self.set(a, v),
            5030..=5049 | 5100..=5199 => self.set(a, v),
            _ => return Err(exception::ILLEGAL_DATA_ADDRESS),
        }
        Ok(())
    }

    /// Answers one request PDU.
    pub fn handle(&mut self, pdu: &Pdu) -> Vec<u8> {
        let f = pdu.function();
        if matches!(
            pdu,
            Pdu::WriteRegister { .. }
                | Pdu::WriteRegisters { .. }
                | Pdu::ReadWrite { .. }
                | Pdu::WriteCoil { .. }
                | Pdu::WriteCoils { .. }
                | Pdu::MaskWrite { .. }
        ) {
            self.writes = self.writes.wrapping_add(1);
        }
        self.refresh();
        let fail = |code: u8| frame::exception_pdu(f, code).to_vec();
        let read = |s: &Self, start: u16, count: u16| -> Vec<u8> {
            let mut out = vec![f, (count * 2) as u8];
            for a in start..start + count {
                out.extend_from_slice(&s.get(a).to_be_bytes());
            }
            out
        };
        match pdu {
            Pdu::ReadRegisters {
                function: 4,
                start,
                count,
            } if *start >= 3000 && *start as u32 + *count as u32 <= 3200 => {
                read(self, *start, *count)
            }
            Pdu::ReadRegisters {
                function: 3,
                start,
                count,
            } if Self::readable(*start, *count) => read(self, *start, *count),
            Pdu::ReadRegisters { .. } => fail(exception::ILLEGAL_DATA_ADDRESS),
            Pdu::WriteRegister { address, value } => match self.write(*address, *value) {
                Ok(()) => {
                    let mut out = vec![6];
                    out.extend_from_slice(&address.to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                    out
                }
                Err(code) => fail(code),
            },
            Pdu::WriteRegisters { start, values } => {
                for (i, v) in values.iter().enumerate() {
                    if let Err(code) = self.write(start + i as u16, *v) {
                        return fail(code);
                    }
                }
                let mut out = vec![16];
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&(values.len() as u16).to_be_bytes());
                out
            }
            Pdu::ReadWrite {
                read_start,
                read_count,
                write_start,
                values,
            } => {
                for (i, v) in values.iter().enumerate() {
                    if let Err(code) = self.write(write_start + i as u16, *v) {
                        return fail(code);
                    }
                }
                if !Self::readable(*read_start, *read_count) {
                    return fail(exception::ILLEGAL_DATA_ADDRESS);
                }
                self.refresh();
                read(self, *read_start, *read_count)
            }
            Pdu::DeviceId { read_code, .. } => {
                let objects: [(u8, &str); 3] = [
                    (0, "metergate"),
                    (1, "ION-class simulator"),
                    (2, env!("CARGO_PKG_VERSION")),
                ];
                let mut out = vec![43, 14, *read_code, 0x01, 0, 0, objects.len() as u8];
                for (id, text) in objects {
                    out.push(id);
                    out.push(text.len() as u8);
                    out.extend_from_slice(text.as_bytes());
                }
                out
            }
            _ => fail(exception::ILLEGAL_FUNCTION),
        }
    }
}

/// The meter's file tree, as a real meter's file store looks to SFTP:
/// `logs/events.log`, `logs/energy.csv`, `firmware/`, `certificates/`,
/// `config/`. Existing files are kept.
pub fn create_file_tree(root: &std::path::Path, id: &str) -> std::io::Result<()> {
    for d in ["logs", "firmware", "certificates", "config"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let write_new = |rel: &str, text: String| -> std::io::Result<()> {
        let path = root.join(rel);
        if !path.exists() {
            std::fs::write(path, text)?;
        }
        Ok(())
    };
    write_new(
        "logs/events.log",
        format!(
            "{} {id} simulated meter started\n",
            OffsetDateTime::now_utc().unix_timestamp()
        ),
    )?;
    write_new("logs/energy.csv", "timestamp,kwh\n".to_string())?;
    write_new(
        "config/meter.cfg",
        format!("id = {id}\nmodel = ION-class simulator\n"),
    )?;
    write_new(
        "firmware/VERSION",
        format!("{}\n", env!("CARGO_PKG_VERSION")),
    )
}

/// A running simulated meter.
pub struct SimulatedMeter {
    pub address: SocketAddr,
    pub state: Arc<Mutex<MeterState>>,
    requests: Arc<AtomicU64>,
}

impl SimulatedMeter {
    /// Starts a meter on `bind` (port 0 for any free port).
    pub async fn start(bind: SocketAddr, faults: Faults) -> std::io::Result<SimulatedMeter> {
        let listener = TcpListener::bind(bind).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(Mutex::new(MeterState::default()));
        let requests = Arc::new(AtomicU64::new(0));
        let limit = Arc::new(Semaphore::new(if faults.max_connections == 0 {
            8
        } else {
            faults.max_connections
        }));
        let (st, rq) = (state.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Like a real meter: beyond its connection limit, it hangs up.
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let (st, rq) = (st.clone(), rq.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = serve(stream, st, rq, faults).await;
                });
            }
        });
        Ok(SimulatedMeter {
            address,
            state,
            requests,
        })
    }

    /// Write requests the meter has received (register 6000, unwrapped).
    pub fn writes(&self) -> u16 {
        self.state.lock().map(|s| s.writes).unwrap_or(0)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

async fn serve(
    mut stream: TcpStream,
    state: Arc<Mutex<MeterState>>,
    requests: Arc<AtomicU64>,
    faults: Faults,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut slow = false;
        loop {
            let (header, used, answer) = match frame::split(&buf) {
                Ok(None) => break,
                Err(_) => return Ok(()), // not Modbus: hang up
                Ok(Some((h, pdu, used))) => {
                    let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
                    slow |= faults.slow_every <= 1 || n.is_multiple_of(faults.slow_every);
                    let answer = match Pdu::decode(pdu) {
                        Ok(p) => state
                            .lock()
                            .map(|mut s| s.handle(&p))
                            .unwrap_or_else(|_| frame::exception_pdu(pdu[0], 4).to_vec()),
                        Err(code) => frame::exception_pdu(pdu[0], code).to_vec(),
                    };
                    let dropped = faults.drop_per_mille > 0
                        && (n * 7919 % 1000) < faults.drop_per_mille as u64;
                    (
                        Header {
                            transaction: h.transaction,
                            unit: h.unit,
                        },
                        used,
                        (!dropped).then_some(answer),
                    )
                }
            };
            buf.drain(..used);
            if let Some(a) = answer {
                out.extend_from_slice(&frame::adu(header, &a));
            }
        }
        if !out.is_empty() {
            if slow && !faults.latency.is_zero() {
                tokio::time::sleep(faults.latency).await;
            }
            stream.write_all(&out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_set_far_into_the_past_does_not_break_the_meter() {
        // Found by the fuzzer: year 1 gave a negative timestamp.
        let mut m = MeterState::default();
        let r = m.handle(&Pdu::WriteRegisters {
            start: 5010,
            values: vec![1, 1, 1, 0, 0, 0],
        });
        assert_eq!(r[0], 16, "{r:?}");
        let r = m.handle(&Pdu::ReadRegisters {
            function: 3,
            start: 3000,
            count: 20,
        });
        assert_eq!(r[0], 3);
    }

    #[test]
    fn the_command_register_and_the_write_counter() {
        let mut m = MeterState::default();
        m.handle(&Pdu::ReadRegisters {
            function: 3,
            start: 3000,
            count: 10,
        });
        assert!(m.peak > 0);
        assert_eq!(
            m.handle(&Pdu::WriteRegister {
                address: 5000,
                value: PEAK_RESET
            })[0],
            6
        );
        assert_eq!(
            m.handle(&Pdu::WriteRegister {
                address: 5000,
                value: 4242
            }),
            vec![0x86, 3]
        );
        assert_eq!(m.handle(&Pdu::Other { function: 65 }), vec![65 | 0x80, 1]);
        let r = m.handle(&Pdu::ReadRegisters {
            function: 3,
            start: 6000,
            count: 1,
        });
        assert_eq!(&r[2..4], &2u16.to_be_bytes(), "two write requests so far");
        assert_eq!(
            m.handle(&Pdu::ReadRegisters {
                function: 3,
                start: 100,
                count: 1
            }),
            vec![0x83, 2]
        );
    }
}
