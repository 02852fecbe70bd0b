"""What people read: the gating report and its charts, gate-result history, notifications and status."""
