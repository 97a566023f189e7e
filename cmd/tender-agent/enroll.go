package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/agent"
	"github.com/tender-edge/tender/agent/enroll"
)

// joinTokenEnv carries the join token when --token is not given, so that
// it need not show in the process list.
const joinTokenEnv = "TENDER_JOIN_TOKEN"

func (c *cli) enrollCmd() *cobra.Command {
	var opt enroll.Options
	cmd := &cobra.Command{
		Use:   "enroll --server https://HOST:PORT --token TOKEN [--id NAME] [--config FILE]",
		Short: "Enroll this device with a fleet controller",
		Long: `Enroll this device with a fleet controller.

The device makes its own key (it never leaves the device), sends a
certificate request and its facts to the controller, and writes its
certificate, the fleet CA and the fleet's signing key into the agent
config (deviceId and fleet: broker, publicKey, caFile, certFile, keyFile;
every other field is kept). The controller must present the CA whose hash
the token carries, or nothing is sent. On any failure nothing is written.
The token may also come from $` + joinTokenEnv + `.

--password-auth also makes a random MQTT password on the device (only its
hash is sent) and has the agent log in with it, username = device id,
instead of its client certificate: for a path to the broker that cannot
carry client certificates. The config file then holds a secret (mode 0600).`,
		Example: "  tender-agent enroll --server https://fleet.example.com:8443 --token tdr1.…",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.Token == "" {
				opt.Token = os.Getenv(joinTokenEnv)
			}
			if opt.Server == "" || opt.Token == "" {
				return usageError{Err: errors.New("enroll needs --server and --token (or $" + joinTokenEnv + ")"), Path: cmd.CommandPath()}
			}
			opt.Facts = agent.DeviceFacts(version)
			opt.CheckConfig = func(path string) error {
				_, err := agent.LoadConfig(path)
				return err
			}
			res, err := enroll.Enroll(cmd.Context(), opt)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "enrolled as %s (certificate valid until %s)\n", res.DeviceID, res.NotAfter.UTC().Format("2006-01-02"))
			fmt.Fprintf(c.out, "broker: %s\n", res.Broker)
			if len(res.Labels) > 0 {
				kv := make([]string, 0, len(res.Labels))
				for k, v := range res.Labels {
					kv = append(kv, k+"="+v)
				}
				sort.Strings(kv)
				fmt.Fprintf(c.out, "labels: %s\n", strings.Join(kv, ","))
			}
			fmt.Fprintf(c.out, "wrote %s, %s, %s, %s\n", res.ConfigPath, res.KeyFile, res.CertFile, res.CAFile)
			if opt.Password {
				fmt.Fprintln(c.out, "the agent logs in to the broker with a password (kept in the config), not its certificate")
			}
			fmt.Fprintln(c.out, "start (or restart) the daemon to connect: tender-agent daemon")
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&opt.Server, "server", "", "the controller's URL, https://HOST:PORT")
	fs.StringVar(&opt.Token, "token", "", "the join token from 'tender token create' (default $"+joinTokenEnv+")")
	fs.StringVar(&opt.DeviceID, "id", "", "the device id (default: the config's deviceId, else the hostname)")
	fs.StringVar(&opt.ConfigPath, "config", defaultAgentConfig, "the agent config to update; the key and certificates go next to it")
	fs.BoolVar(&opt.Password, "password-auth", false, "log in to the broker with a password made on the device, not the client certificate")
	return cmd
}
