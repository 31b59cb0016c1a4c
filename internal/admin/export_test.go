package admin

// UsageTimeout is usageTimeout, for the tests of the package's bounds.
const UsageTimeout = usageTimeout
