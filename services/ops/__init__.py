"""Operations: fault switches and the audit trail of admin actions."""
