module github.com/messagevault/messagevault

go 1.26.8
