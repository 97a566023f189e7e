package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/tender-edge/tender/fleet/api"
	"github.com/tender-edge/tender/fleet/store"
)

// apiTokenCmd is `tender api-token`: the API's bearer tokens, not the
// join tokens of devices (`tender token`).
func (c *cli) apiTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "api-token COMMAND",
		Short: "Create, list and revoke API tokens (admin or read-only)",
		Long: `Create, list and revoke the API's bearer tokens, for this CLI, the web
console and scripts. An admin token may do everything; a read-only token
sees everything and changes nothing. Tokens are stored hashed: a value is
shown once, at creation. A revoked token is refused at its next request.
(Devices enroll with join tokens: see 'tender token'.)`,
		Args: subcommandOnly,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var readOnly bool
	var o string
	create := &cobra.Command{
		Use:   "create NAME [--read-only]",
		Short: "Create an API token (admin, or read-only with --read-only); shown once",
		Long: `Create an API token named NAME (1 to 63 of a-z, 0-9 and '-', unique
among the tokens not revoked): an admin token, or with --read-only one that
sees everything and changes nothing. Its value is printed once.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.ValidAPITokenName(args[0]); err != nil {
				return err
			}
			role := store.RoleAdmin
			if readOnly {
				role = store.RoleReadOnly
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			tok, err := cl.CreateAPIToken(cmd.Context(), api.APITokenRequest{Name: args[0], Role: role})
			if err != nil {
				return err
			}
			if ok, err := c.emit(o, tok); ok {
				return err
			}
			fmt.Fprintf(c.out, "%s\n\nAPI token %s (%s) created. It is not shown again. To use it:\n  export TENDER_SERVER=%s\n  export TENDER_TOKEN=%s\n",
				tok.Token, tok.Name, tok.Role, cl.Server(), tok.Token)
			return nil
		},
	}
	create.Flags().BoolVar(&readOnly, "read-only", false, "a read-only token: it sees everything and changes nothing")
	outputFlag(create, &o, false)

	var lo string
	ls := &cobra.Command{
		Use:     "ls [-o json|yaml]",
		Aliases: []string{"list"},
		Short:   "List the API tokens, revoked ones included (never their values)",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			ts, err := cl.APITokens(cmd.Context())
			if err != nil {
				return err
			}
			if ok, err := c.emit(lo, ts); ok {
				return err
			}
			tw := c.table("NAME", "ROLE", "CREATED", "REVOKED")
			for _, t := range ts {
				revoked := "-"
				if t.Revoked {
					revoked = t.RevokedAt.Format(time.RFC3339)
				}
				row(tw, t.Name, string(t.Role), t.Created.Format(time.RFC3339), revoked)
			}
			return tw.Flush()
		},
	}
	outputFlag(ls, &lo, false)

	rm := &cobra.Command{
		Use:               "rm NAME",
		Aliases:           []string{"revoke"},
		Short:             "Revoke an API token: it is refused from its next request on",
		Long:              "Revoke the API token named NAME: the API and the web console refuse it from its next request on. The last admin token is not revoked. The token this command runs with may be: it says so.",
		Args:              exactArgs(1),
		ValidArgsFunction: c.completeAPITokens,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			r, err := cl.RevokeAPIToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "api token %s (%s) revoked\n", r.Name, r.Role)
			if r.Self {
				fmt.Fprintf(c.out, "It was the token this command ran with (TENDER_TOKEN): it is refused from now on.\n")
			}
			return nil
		},
	}
	cmd.AddCommand(create, ls, rm)
	return cmd
}

// completeAPITokens completes the names of the tokens not revoked.
func (c *cli) completeAPITokens(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	cl, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	ts, err := cl.APITokens(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, t := range ts {
		if !t.Revoked && !slices.Contains(names, t.Name) {
			names = append(names, t.Name)
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
