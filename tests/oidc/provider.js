// A real OpenID Connect provider (panva's oidc-provider, pinned by package-lock.json) on
// loopback, for the sign-in browser test. Its development login form accepts any login and
// password: the login typed becomes the account, its email and (before the @) its name.
//
//   node provider.js PORT REDIRECT_URI
//
// Prints "ready ISSUER" once it listens; stops when its parent closes stdin.
import Provider from "oidc-provider";

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error("usage: node provider.js PORT REDIRECT_URI");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

function account(id) {
  const email = id.includes("@") ? id : `${id}@example.com`;
  const name = email.split("@")[0].replace(/^./, (c) => c.toUpperCase());
  return {
    accountId: id,
    claims: async () => ({ sub: id, email, email_verified: true, name }),
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: "sd35-dashboard",
      client_secret: "test-secret-not-for-production",
      redirect_uris: [redirectUri],
      // Streamlit's st.logout() sends the user back to its own callback.
      post_logout_redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  // Streamlit builds st.user from the ID token alone: put the scopes' claims into it.
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  findAccount: async (_ctx, id) => account(id),
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["loopback-test-only"] },
});
provider.proxy = false;

const server = provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`ready ${issuer}`);
});
// Bounded life: the test holds our stdin; when it goes (test ended or crashed), we go.
process.stdin.resume();
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.on("close", () => process.exit(0));
