-- The Merkle frontier of each checkpoint (the roots of its perfect subtrees, hex, comma
-- separated), so the next checkpoint hashes only the receipts added since instead of the
-- whole log. NULL for checkpoints made without it: the next one then starts from the leaves.
ALTER TABLE receipt_checkpoints ADD COLUMN frontier TEXT;
