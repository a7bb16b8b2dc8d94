// PLACEHOLDER (being written)
