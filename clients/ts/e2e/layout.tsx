// The app's root layout (copied to app/layout.tsx by tests/test_ts_examples.py): Next.js needs
// one for any page of the app router.
export default function RootLayout({ children }: { children: React.ReactNode }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  );
}
