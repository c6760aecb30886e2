package main

import (
	"os"

	"github.com/spf13/pflag"

	"github.com/messagevault/messagevault/azure"
)

// addAzureFlag registers --azure, the one account flag of serve, users
// and bench; use says what the account is for.
func addAzureFlag(f *pflag.FlagSet, p *string, use string) {
	f.StringVar(p, "azure", "", use+": --azure=<connection string or https://ACCOUNT.blob.core.windows.net (Microsoft Entra ID)>, env:VAR or @FILE to read it from there, or --azure alone for $"+AzureConnectionEnv)
	f.Lookup("azure").NoOptDefVal = azureFromEnv
}

// openAzure opens the account a flag names (--azure, --stream-account):
// the one place that resolves its value. An empty value is refused, so
// a missing variable never means "no account".
func openAzure(flag, value string) (*azure.Storage, error) {
	spec := value
	if spec == azureFromEnv {
		if spec = os.Getenv(AzureConnectionEnv); spec == "" {
			return nil, usageError("%s without a value takes the connection string from %s, which is empty", flag, AzureConnectionEnv)
		}
	} else {
		var err error
		if spec, err = secretValue(spec); err != nil {
			return nil, usageError("%s: %v", flag, err)
		}
	}
	if spec == "" {
		return nil, usageError("%s is empty: give a connection string or the account's URL", flag)
	}
	s, err := azure.Open(spec, azure.Config{})
	if err != nil {
		return nil, usageError("%s: %v", flag, err)
	}
	return s, nil
}
