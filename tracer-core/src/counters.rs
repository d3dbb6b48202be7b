//! What the kernel side counted: records handed over, and every loss by reason.

/// What the kernel side counted: records handed over, and every loss by reason.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub events: u64,
    pub ringbuf_full: u64,
    pub blocked_write_full: u64,
    pub socks_full: u64,
    pub payload_fault: u64,
    pub stack_lost: u64,
    pub stack_table_full: u64,
    /// Requests the overhead budget left out: counted, not traced.
    pub left_out_requests: u64,
}

impl Counters {
    /// Everything lost, whatever the reason: the total the report shows
    /// (`drops` breaks it down).
    pub fn dropped(&self) -> u64 {
        self.ringbuf_full
            + self.blocked_write_full
            + self.socks_full
            + self.payload_fault
            + self.stack_lost
            + self.stack_table_full
    }

    /// What was counted since `base` was read.
    #[must_use]
    pub fn since(&self, base: &Counters) -> Counters {
        Counters {
            events: self.events.saturating_sub(base.events),
            ringbuf_full: self.ringbuf_full.saturating_sub(base.ringbuf_full),
            blocked_write_full: self
                .blocked_write_full
                .saturating_sub(base.blocked_write_full),
            socks_full: self.socks_full.saturating_sub(base.socks_full),
            payload_fault: self.payload_fault.saturating_sub(base.payload_fault),
            stack_lost: self.stack_lost.saturating_sub(base.stack_lost),
            stack_table_full: self.stack_table_full.saturating_sub(base.stack_table_full),
            left_out_requests: self
                .left_out_requests
                .saturating_sub(base.left_out_requests),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loss_is_in_the_total() {
        let c = Counters {
            events: 100,
            ringbuf_full: 1,
            blocked_write_full: 2,
            socks_full: 4,
            payload_fault: 8,
            stack_lost: 16,
            stack_table_full: 32,
            left_out_requests: 64,
        };
        assert_eq!(c.dropped(), 63, "requests left out are not lost");
    }
}
