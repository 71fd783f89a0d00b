//! One TCP connection to a quote server: connect, the three setup packets, then one request and
//! one answer at a time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::TdxError;
use crate::wire::{self, ResponseHeader, RESPONSE_HEADER_LEN};

/// A set-up connection. Any failed call leaves it in an unknown state: drop it.
pub struct Connection {
    stream: TcpStream,
    addr: String,
    seq: u32,
    timeout: Duration,
}

impl Connection {
    /// Connects to `addr` (host:port) and sends the setup packets; every step within `timeout`.
    pub async fn open(addr: &str, timeout: Duration) -> Result<Connection, TdxError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| TdxError::Timeout { addr: addr.to_string(), timeout })?
            .map_err(|source| TdxError::Io { addr: addr.to_string(), source })?;
        stream.set_nodelay(true).map_err(|source| TdxError::Io { addr: addr.to_string(), source })?;
        let mut connection = Connection { stream, addr: addr.to_string(), seq: 0, timeout };
        for packet in wire::setup_packets() {
            let command = u16::from_le_bytes([packet[wire::REQUEST_HEADER_LEN], packet[wire::REQUEST_HEADER_LEN + 1]]);
            connection.exchange(&packet, command).await?;
        }
        Ok(connection)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `body` under `command` and returns the answer's (inflated) body.
    pub async fn call(&mut self, command: u16, body: &[u8]) -> Result<Vec<u8>, TdxError> {
        self.seq = self.seq.wrapping_add(1);
        let packet = wire::request(self.seq, command, body);
        self.exchange(&packet, command).await
    }

    async fn exchange(&mut self, packet: &[u8], command: u16) -> Result<Vec<u8>, TdxError> {
        let (addr, timeout) = (self.addr.clone(), self.timeout);
        let io = |source| TdxError::Io { addr: addr.clone(), source };
        let round_trip = async {
            self.stream.write_all(packet).await.map_err(io)?;
            let mut header = [0u8; RESPONSE_HEADER_LEN];
            self.stream.read_exact(&mut header).await.map_err(io)?;
            let header = ResponseHeader::parse(&header)?;
            if header.command != command {
                return Err(TdxError::protocol(format!("asked command {command:#06x}, answered {:#06x}", header.command)));
            }
            let mut raw = vec![0u8; usize::from(header.zipped_len)];
            self.stream.read_exact(&mut raw).await.map_err(io)?;
            header.unpack(&raw)
        };
        tokio::time::timeout(timeout, round_trip).await.map_err(|_| TdxError::Timeout { addr: self.addr.clone(), timeout })?
    }
}
