package stream

// SetIndexPage makes lookups read the time index by pages of n bytes, and
// returns what puts it back.
func SetIndexPage(n int) (restore func()) {
	old := indexPage
	indexPage = n
	return func() { indexPage = old }
}
